//! `phonebank token create|list|revoke`: organiser API tokens.

use std::process::ExitCode;

use super::say;
use crate::domain::ApiToken;
use crate::store::Store;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// Who or what will use it; recorded as the actor in audit trails.
        #[arg(long)]
        name: String,
        /// Print `{"id": .., "token": ".."}` instead of the bare token.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never the secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; requests using it get 401 at once.
    Revoke { id: i64 },
}

pub async fn run(store: &Store, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create { name, json } => {
            let name = name.trim();
            anyhow::ensure!(!name.is_empty(), "--name must not be empty");
            let token = ApiToken::generate();
            let id = store.create_token(name, &token).await?;
            if json {
                say!(
                    "{}",
                    serde_json::json!({"id": id, "name": name, "token": token.expose()})
                );
            } else {
                say!("{}", token.expose());
                eprintln!("token {id} ({name}) created; it is shown only now");
            }
        }
        TokenCommand::List { json } => {
            let tokens = store.list_tokens().await?;
            if json {
                say!("{}", serde_json::to_string(&tokens)?);
            } else {
                say!("{:>4}  {:<30} {:<8}", "id", "name", "state");
                for t in tokens {
                    say!(
                        "{:>4}  {:<30} {:<8}",
                        t.id,
                        t.name,
                        if t.revoked { "revoked" } else { "active" }
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            store
                .revoke_token(id)
                .await
                .map_err(|e| anyhow::anyhow!("cannot revoke token {id}: {e}"))?;
            eprintln!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
