"""Free-text hygiene shared by domains that publish text: redact contact details and names."""

from __future__ import annotations

import re

import pandas as pd

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# International or national phone numbers: a leading + or 0, then 9+ digits with spaces/dashes/dots.
PHONE = re.compile(r"(?:\+\d{1,3}|\b0)[\s.-]?\d(?:[\s.-]?\d){7,12}\b")


def redact_contact_details(text: pd.Series, names: pd.Series | None = None) -> pd.Series:
    """Replace email addresses, phone numbers and (given per row) the person's name with placeholders."""
    out = text.astype("str").str.replace(EMAIL, "[email]", regex=True).str.replace(PHONE, "[phone]", regex=True)
    if names is not None:
        values = out.tolist()
        for i, name in enumerate(names.tolist()):
            if isinstance(name, str) and name:
                values[i] = values[i].replace(name, "[name]")
        out = pd.Series(values, index=text.index, dtype="str")
    return out
