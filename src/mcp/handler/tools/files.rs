//! The files family: `file_read`, a read-only window on the files under the server's
//! file root.

use rmcp::{
    ErrorData as McpError, RoleServer,
    handler::server::{common::schema_for_output, wrapper::Parameters},
    schemars::{self, JsonSchema},
    service::RequestContext,
    tool, tool_router,
};
use serde::{Deserialize, Serialize};

use super::{ToolResult, reply};
use crate::{
    managed::file::FileHandle,
    mcp::{
        error::ToolFailure,
        handler::{StatefulServer, binding::caller},
    },
};

/// `file_read` arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct FileReadArgs {
    /// Path of the file, relative to the server's file root.
    pub path: String,
    /// Byte offset to start at (default 0).
    #[serde(default)]
    pub offset: u64,
    /// Most bytes to read (default and maximum: the server's `resources.max_read_bytes`).
    #[serde(default)]
    pub length: Option<u64>,
}

/// `file_read` result.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FileReadOutput {
    /// The path read.
    pub path: String,
    /// Where the read started.
    pub offset: u64,
    /// Bytes returned.
    pub bytes_read: u64,
    /// The file's size.
    pub size: u64,
    /// Whether the read reached the end of the file.
    pub eof: bool,
    /// `utf-8` when `content` is the text itself, `base64` when the bytes are not UTF-8.
    pub encoding: String,
    /// The bytes read.
    pub content: String,
}

#[tool_router(router = files_tools, vis = "pub(super)")]
impl StatefulServer {
    /// Reads part of a file under the configured root.
    #[tool(
        description = "Read a file under the server's file root (read-only): `path` relative \
                       to the root, `offset` and `length` in bytes (at most the server's \
                       `resources.max_read_bytes`). Returns UTF-8 text, or base64 for other \
                       bytes. Paths outside the root are refused.",
        output_schema = schema_for_output::<FileReadOutput>()
    )]
    async fn file_read(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(args): Parameters<FileReadArgs>,
    ) -> ToolResult {
        let max = self.max_read_bytes as u64;
        let length = args.length.unwrap_or(max);
        if length > max {
            return Err(ToolFailure::Refused(format!(
                "`length` must be at most {max} (got {length}); read in parts with `offset`"
            )));
        }
        let file = self
            .managed
            .get_for::<FileHandle>(
                caller(&ctx).as_str(),
                crate::managed::file::KIND,
                &args.path,
            )
            .await
            .map_err(|e| self.errors.handle(e))?;
        let bytes = file
            .read(args.offset, length as usize)
            .await
            .map_err(|e| McpError::internal_error(format!("read failed: {e}"), None))?;
        let bytes_read = bytes.len() as u64;
        let (encoding, content) = match String::from_utf8(bytes) {
            Ok(text) => ("utf-8", text),
            Err(e) => {
                use base64::Engine as _;
                let encoded = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                ("base64", encoded)
            }
        };
        let out = FileReadOutput {
            eof: args.offset.saturating_add(bytes_read) >= file.len(),
            path: args.path,
            offset: args.offset,
            bytes_read,
            size: file.len(),
            encoding: encoding.to_owned(),
            content,
        };
        let text = match out.encoding.as_str() {
            "utf-8" => out.content.clone(),
            _ => format!(
                "{} bytes of binary data from {} at offset {} (base64 in structured content)",
                out.bytes_read, out.path, out.offset
            ),
        };
        reply(text, &out)
    }
}
