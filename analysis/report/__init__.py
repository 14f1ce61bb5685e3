"""The fit's files: fit.json, the tables, summary.md, headline.md, the plots."""
