//! `[conformance]`: whether the official MCP conformance suite's fixtures are served.

use serde::Deserialize;

/// The fixtures the official MCP conformance suite calls (`test_*` tools, `test://`
/// resources, prompts, completions, logging), served beside the production tools.
#[derive(Debug, Clone, Deserialize)]
pub struct ConformanceSettings {
    /// Serve the fixtures. Off in production: they exist to be tested against.
    pub enabled: bool,
}
