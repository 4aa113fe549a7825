//! Reading token ids from text: a JSON array (`[1, 2, 3]`) or one id per line.
//!
//! Every id must be an integer in `0..=4294967295`; anything else is an error
//! that names the position (array index or line number) and the bad value.

use pagoda_formats::limits;

/// Why token text could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("input is not a JSON array of token ids: {0}")]
    Json(#[from] serde_json::Error),
    #[error("token at index {index} is {value}, not an integer in 0..=4294967295")]
    BadJsonToken { index: usize, value: String },
    #[error("line {line}: {text:?} is not a token id (an integer in 0..=4294967295)")]
    BadLine { line: usize, text: String },
    #[error("{count} tokens exceed the limit of {max} per request")]
    TooMany { count: usize, max: u64 },
}

/// Parses token ids from `text` (JSON array if it starts with `[`, otherwise
/// one id per line; blank lines are skipped).
pub(crate) fn parse(text: &str) -> Result<Vec<u32>, TokenError> {
    let tokens = if text.trim_start().starts_with('[') {
        parse_json(text)?
    } else {
        parse_lines(text)?
    };
    if tokens.len() as u64 > limits::TOKENS_PER_REQUEST_MAX {
        return Err(TokenError::TooMany {
            count: tokens.len(),
            max: limits::TOKENS_PER_REQUEST_MAX,
        });
    }
    Ok(tokens)
}

fn parse_json(text: &str) -> Result<Vec<u32>, TokenError> {
    let values: Vec<serde_json::Value> = serde_json::from_str(text)?;
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            value
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| TokenError::BadJsonToken {
                    index,
                    value: value.to_string(),
                })
        })
        .collect()
}

fn parse_lines(text: &str) -> Result<Vec<u32>, TokenError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            line.trim().parse::<u32>().map_err(|_| TokenError::BadLine {
                line: index + 1,
                text: line.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arrays_and_lines_give_the_same_tokens() {
        assert_eq!(parse(" [1, 2,3]\n").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse("1\n2\n\n3\n").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse("").unwrap(), Vec::<u32>::new());
        assert_eq!(parse("[4294967295]").unwrap(), vec![u32::MAX]);
    }

    #[test]
    fn bad_tokens_name_their_position() {
        let error = parse("[1, -2]").unwrap_err().to_string();
        assert!(error.contains("index 1") && error.contains("-2"), "{error}");
        let error = parse("[1, 4294967296]").unwrap_err().to_string();
        assert!(error.contains("4294967296"), "{error}");
        let error = parse("[1, \"a\"]").unwrap_err().to_string();
        assert!(error.contains("index 1"), "{error}");
        let error = parse("1\nx\n").unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(matches!(parse("[1,"), Err(TokenError::Json(_))));
    }
}
