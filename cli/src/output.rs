//! Plain-text tables and CSV for people and spreadsheets (JSON goes through serde_json directly).

use std::io::Write;

pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self { headers: headers.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Left-aligned columns two spaces apart, indented by `indent`; the last column is not padded.
    pub fn write(&self, out: &mut dyn Write, indent: &str) -> std::io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        for cells in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::from(indent);
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 < cells.len() {
                    let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                } else {
                    line.push_str(cell);
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// One CSV line (RFC 4180 quoting).
pub fn csv_line(cells: &[String]) -> String {
    cells
        .iter()
        .map(|c| if c.contains([',', '"', '\n', '\r']) { format!("\"{}\"", c.replace('"', "\"\"")) } else { c.clone() })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn json_line(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")
}

/// Cuts long text for a table cell.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_csv_quotes() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xyz".into(), "1".into()]);
        let mut buf = Vec::new();
        t.write(&mut buf, "  ").unwrap();
        assert_eq!(String::from_utf8(buf).unwrap(), "  A    LONGER\n  xyz  1\n");
        assert_eq!(csv_line(&["a".into(), "b,c".into(), "say \"hi\"".into()]), "a,\"b,c\",\"say \"\"hi\"\"\"");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
