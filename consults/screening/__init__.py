"""Screening programmes (C12): low-dose CT lung screening run by the alliance for its clinics."""
