"""The shipped embedded data are exactly what the generator writes."""

from finpipe.synth import write_embedded


def test_generator_reproduces_shipped_files(tmp_path, repo):
    write_embedded(tmp_path)
    shipped = sorted(p.relative_to(repo / "data" / "embedded") for p in (repo / "data" / "embedded").rglob("*") if p.is_file())
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert shipped == generated
    for rel in shipped:
        assert (tmp_path / rel).read_bytes() == (repo / "data" / "embedded" / rel).read_bytes(), rel
