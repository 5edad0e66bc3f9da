//! `moa serve`: its arguments, and the hand-over to the server (`crate::serve`).

use std::path::Path;

use super::CliError;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (default: [serve] listen in config.toml, else 127.0.0.1:8080).
    #[arg(long, value_name = "IP:PORT")]
    pub listen: Option<String>,
    /// Serve only this preset (repeat for more); default: every shipped and user preset.
    #[arg(long = "preset", value_name = "NAME")]
    pub presets: Vec<String>,
    /// Save every served run as a session (`moa sessions list` shows them).
    #[arg(long)]
    pub record: bool,
    /// Listen on a non-loopback address without MOA_SERVE_KEY (something in front of moa checks
    /// who may connect).
    #[arg(long)]
    pub insecure: bool,
}

pub fn main(config: Option<&Path>, args: ServeArgs) -> Result<u8, CliError> {
    crate::serve::main(
        config,
        crate::serve::ServeOptions {
            listen: args.listen,
            presets: args.presets,
            record: args.record,
            insecure: args.insecure,
        },
    )
}
