//! Printers and plots: tables, JSON/CSV output, SVG charts, the reproduction report.
