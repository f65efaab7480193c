"""Reports: terminal tables, figures and (later) self-contained HTML."""
