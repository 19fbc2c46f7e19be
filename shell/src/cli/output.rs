//! How list commands print: `-o table` (the default: aligned columns with a header, for
//! people) or `-o json` (one JSON object per line, for scripts), like kubectl's `-o`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// The output flags every list command flattens in.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Output format: table (for people) or json (one JSON object per line, for scripts).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// The same as `-o json` (kept for older scripts).
    #[arg(long, hide = true)]
    pub json: bool,
}

impl OutputArgs {
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.output
        }
    }
}

/// A column: its header and how a row shows in it.
pub type Column<T> = (&'static str, fn(&T) -> String);

/// `items` in `format`: a table of `columns`, or each item's own JSON.
pub fn render<T: Serialize>(format: Format, items: &[T], columns: &[Column<T>]) -> String {
    match format {
        Format::Json => items
            .iter()
            .map(|item| {
                // Serializing plain data to a string cannot fail; a failure would be a bug.
                let line = serde_json::to_string(item).unwrap_or_else(|err| {
                    serde_json::json!({ "error": err.to_string() }).to_string()
                });
                line + "\n"
            })
            .collect(),
        Format::Table => {
            let cells: Vec<Vec<String>> = items
                .iter()
                .map(|item| columns.iter().map(|(_, show)| show(item)).collect())
                .collect();
            let header: Vec<String> = columns.iter().map(|(name, _)| (*name).to_owned()).collect();
            table(&header, &cells)
        }
    }
}

/// Prints [`render`]'s text to stdout.
pub fn print<T: Serialize>(args: &OutputArgs, items: &[T], columns: &[Column<T>]) {
    print!("{}", render(args.format(), items, columns));
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let last = row.len().saturating_sub(1);
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == last {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// An optional value as a table cell: `-` when absent.
pub fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        name: &'static str,
        count: u32,
    }

    const COLUMNS: &[Column<Row>] =
        &[("NAME", |r| r.name.to_owned()), ("COUNT", |r| r.count.to_string())];

    #[test]
    fn table_aligns_columns_under_a_header() {
        let rows = [Row { name: "a-long-name", count: 1 }, Row { name: "b", count: 20 }];
        assert_eq!(
            render(Format::Table, &rows, COLUMNS),
            "NAME         COUNT\na-long-name  1\nb            20\n"
        );
    }

    #[test]
    fn json_is_one_object_per_line() {
        let rows = [Row { name: "a", count: 1 }, Row { name: "b", count: 2 }];
        let text = render(Format::Json, &rows, COLUMNS);
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
        assert_eq!(
            lines,
            [
                serde_json::json!({"name": "a", "count": 1}),
                serde_json::json!({"name": "b", "count": 2})
            ]
        );
    }

    #[test]
    fn an_empty_list_is_a_header_or_nothing() {
        assert_eq!(render::<Row>(Format::Table, &[], COLUMNS), "NAME  COUNT\n");
        assert_eq!(render::<Row>(Format::Json, &[], COLUMNS), "");
    }
}
