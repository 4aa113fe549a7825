//! The binary's one `tracing` subscriber (STYLE.md §12: libraries emit
//! events with fields, the binary decides where they go).
//!
//! Events go to stderr, so what a command prints on stdout stays clean for
//! scripts. The filter comes from `PAGODA_LOG`, else `RUST_LOG`, else
//! `info`, in `tracing-subscriber`'s `EnvFilter` syntax (`warn`,
//! `info,pagoda_engine=debug`, …); a filter that does not parse is a usage
//! error, not a silent fallback that would hide the lines asked for. The
//! format is `--log-format text` (the default: one human-readable line per
//! event, coloured only when stderr is a terminal) or `--log-format json`
//! (one JSON object per line, the event's fields under `fields`).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The filter used when neither variable is set (or both are empty).
const FILTER_DEFAULT: &str = "info";

/// The filter directives and the variable they came from: `PAGODA_LOG`
/// wins over `RUST_LOG`; an empty variable counts as unset.
fn directives(pagoda_log: Option<String>, rust_log: Option<String>) -> (&'static str, String) {
    let set = |value: Option<String>| value.filter(|text| !text.trim().is_empty());
    if let Some(text) = set(pagoda_log) {
        return ("PAGODA_LOG", text);
    }
    if let Some(text) = set(rust_log) {
        return ("RUST_LOG", text);
    }
    ("default", FILTER_DEFAULT.to_owned())
}

/// Installs the subscriber for the whole process; call once, first thing.
pub(crate) fn install(format: LogFormat) -> Result<(), String> {
    let (source, text) = directives(
        std::env::var("PAGODA_LOG").ok(),
        std::env::var("RUST_LOG").ok(),
    );
    let filter = EnvFilter::builder()
        .parse(&text)
        .map_err(|error| format!("{source}={text:?}: {error}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|error| format!("installing the log subscriber: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagoda_log_wins_over_rust_log_and_empty_counts_as_unset() {
        let some = |text: &str| Some(text.to_owned());
        assert_eq!(
            directives(some("warn"), some("debug")),
            ("PAGODA_LOG", "warn".to_owned())
        );
        assert_eq!(
            directives(None, some("debug")),
            ("RUST_LOG", "debug".to_owned())
        );
        assert_eq!(
            directives(some(" "), some("debug")),
            ("RUST_LOG", "debug".to_owned())
        );
        assert_eq!(directives(None, None), ("default", "info".to_owned()));
    }

    #[test]
    fn the_default_and_module_filters_parse() {
        for text in [FILTER_DEFAULT, "warn", "info,pagoda_engine=debug"] {
            assert!(EnvFilter::builder().parse(text).is_ok(), "{text}");
        }
        assert!(EnvFilter::builder().parse("pagoda_engine=loud").is_err());
    }
}
