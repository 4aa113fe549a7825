//! The Mooncake trace format (feature `trace`): JSON Lines, one request a
//! line, as published with the Mooncake paper
//! (`{"timestamp": ms, "input_length": tokens, "output_length": tokens,
//! "hash_ids": [ids]}`; `hash_ids` holds one id per 512-token block,
//! prefix-chained: block i's id names the whole prefix through block i).
//!
//! One reader for every user: the engine's policy replays, `pagoda trace
//! analyze`, `pagoda replay` and the benches. Blank lines are skipped;
//! anything else that is not such an object is an error naming its line.

use serde::Deserialize;

/// One request of a trace.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct TraceRequest {
    /// Arrival, milliseconds from the trace's start.
    pub timestamp: u64,
    /// Prompt tokens.
    pub input_length: u64,
    /// Generated tokens.
    pub output_length: u64,
    /// Prefix-chained block ids.
    pub hash_ids: Vec<u64>,
}

/// A line that is not a trace request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trace line {line}: {reason}")]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Parses a whole trace.
pub fn parse_trace(text: &str) -> Result<Vec<TraceRequest>, TraceError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            serde_json::from_str(line).map_err(|error| TraceError {
                line: number + 1,
                reason: error.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_lines_are_errors_with_their_line() {
        let text = "{\"timestamp\": 0, \"input_length\": 1024, \"output_length\": 8, \"hash_ids\": [1, 2]}\n\n\
                    {\"timestamp\": 5, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": []}\n";
        let requests = parse_trace(text).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].hash_ids, vec![1, 2]);
        assert_eq!(requests[1].timestamp, 5);
        for (bad, line) in [
            ("{\"timestamp\": 0}", 1),
            (
                "\n{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [\"x\"]}",
                2,
            ),
            ("not json", 1),
        ] {
            let error = parse_trace(bad).unwrap_err();
            assert_eq!(error.line, line, "{bad}: {error}");
        }
    }
}
