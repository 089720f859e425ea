//! Reads a Prometheus text exposition (what `/metrics` serves) as individual series, as a
//! scraper would.

/// One series: a name, its labels and its current value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Series name (for histograms, with its `_bucket` / `_sum` / `_count` suffix).
    pub name: String,
    /// Label pairs in rendered order.
    pub labels: Vec<(String, String)>,
    /// Current value.
    pub value: f64,
}

/// Parses every sample line of `text`; comments and malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, rest) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, rest)
        }
        None => {
            let space = line.find(' ')?;
            (&line[..space], Vec::new(), &line[space..])
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Series {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `key="value",...}` and returns the pairs and what follows the closing brace.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches(',');
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let equals = text.find("=\"")?;
        let key = text[..equals].to_owned();
        let mut value = String::new();
        let mut chars = text[equals + 2..].char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break equals + 2 + i + 1,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    escaped => value.push(escaped),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        text = &text[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels_are_read() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n\
                    b{x=\"1\",y=\"q\\\"uote\\\\d\\nline\"} 2.5\nc_bucket{le=\"+Inf\"} 7\nd +Inf\n";
        let series = parse(text);
        assert_eq!(series.len(), 4);
        assert_eq!((series[0].name.as_str(), series[0].value), ("a_total", 3.0));
        assert_eq!(
            series[1].labels,
            vec![
                ("x".to_owned(), "1".to_owned()),
                ("y".to_owned(), "q\"uote\\d\nline".to_owned())
            ]
        );
        assert_eq!(series[1].value, 2.5);
        assert_eq!(series[2].labels[0].1, "+Inf");
        assert_eq!(series[3].value, f64::INFINITY);
    }
}
