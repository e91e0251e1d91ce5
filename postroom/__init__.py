"""Postroom: an ACD for email."""
