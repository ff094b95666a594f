"""Office outputs: 検針 reading files and 除雪作業日報 (docs/reports.md)."""
