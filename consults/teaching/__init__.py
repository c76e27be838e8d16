"""Teaching cases (C10): a specialist's finished case, de-identified, for the alliance's doctors."""
