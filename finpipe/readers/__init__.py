"""Readers turn user files into rows; they raise UserError for unusable files, and keep
row-level problems in a `parse_error` column so validation can quarantine them."""
