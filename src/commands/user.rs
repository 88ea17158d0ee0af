//! `tokenledger user`: the users file of `serve` and `collect` (argon2 hashes, tenants).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Subcommand;
use tokenledger_engine::EngineError;
use tokenledger_flight_server::{Grant, Users};

use crate::error::CliError;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (or change their password and tenants); the password is read from stdin.
    Add {
        /// User name.
        name: String,
        /// The users file (created if missing).
        #[arg(long)]
        users: PathBuf,
        /// A tenant whose rows the user sees (repeat for several); '*' = every tenant, plus
        /// what only administrators see (tokenledger_files, EXPLAIN).
        #[arg(long = "tenant", required = true)]
        tenants: Vec<String>,
    },
    /// Change a user's tenants, keeping their password.
    Grant {
        /// User name.
        name: String,
        /// The users file.
        #[arg(long)]
        users: PathBuf,
        /// The user's tenants from now on (repeat for several); '*' = every tenant.
        #[arg(long = "tenant", required = true)]
        tenants: Vec<String>,
    },
}

impl UserCommand {
    /// Runs the command.
    pub fn run(self) -> Result<(), CliError> {
        match self {
            UserCommand::Add {
                name,
                users,
                tenants,
            } => {
                let grant = Grant::from_tenants(&tenants)?;
                let password = read_password(&name)?;
                Users::add(&users, &name, &password, &grant)?;
                eprintln!(
                    "user {name} saved in {} with tenants {}",
                    users.display(),
                    grant.scope()
                );
            }
            UserCommand::Grant {
                name,
                users,
                tenants,
            } => {
                let grant = Grant::from_tenants(&tenants)?;
                Users::grant(&users, &name, &grant)?;
                eprintln!("user {name} now sees tenants {}", grant.scope());
            }
        }
        Ok(())
    }
}

/// Reads a password from stdin, without echo when stdin is a terminal.
fn read_password(name: &str) -> Result<String, EngineError> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("password for {name}: "))?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    Ok(password)
}
