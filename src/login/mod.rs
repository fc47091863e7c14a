//! `nexus login DOMAIN [--import FILE]`: gets a Claude subscription's OAuth credential
//! into `CREDENTIALS_DIR/DOMAIN.credentials.json` without hand-written JSON.
//!
//! The browser flow is OAuth 2.0's authorization code with PKCE (S256), as Claude Code
//! runs it: print the authorize URL, read back the code the callback page shows, check
//! the state, trade code + verifier at `OAUTH_TOKEN_URL`, write the file. `--import`
//! takes Claude Code's own credential instead. Either way the file is written under the
//! refresher's lock, atomically, and a running nexus picks it up by hot reload.

pub mod authorize;
pub mod import;
pub mod paste;
pub mod pkce;
pub mod save;

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::config::{Config, LoginArgs};
use crate::credentials::token_client::{CodeGrant, RefreshError, TokenEndpoint};
use authorize::{authorize_url, AuthorizeTarget};
use pkce::Pkce;
use save::{LoggedIn, Target};

/// Why a login stopped. Each says what to do next, in one line, with no secret.
#[derive(Debug)]
pub enum LoginError {
    /// A flag the command cannot honour (exit 2, like a configuration error).
    Usage(String),
    /// Anything else (exit 1); nothing was written.
    Failed(String),
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::Usage(why) | LoginError::Failed(why) => f.write_str(why),
        }
    }
}

impl From<String> for LoginError {
    fn from(why: String) -> LoginError {
        LoginError::Failed(why)
    }
}

/// Runs `nexus login`: prompts on `out`, reads the pasted code from `input`.
pub fn run(
    args: &LoginArgs,
    config: &Config,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), LoginError> {
    let mut target = Target::check(&config.credentials_dir, &args.domain)?;
    if let Some(id) = &args.id {
        target = target.member(id).map_err(LoginError::Usage)?;
    }
    let tokens = match &args.import {
        Some(file) => imported(Path::new(file), out)?,
        None => browser_flow(config, input, out)?,
    };
    target.save(&tokens)?;
    report(&target, &tokens, out);
    Ok(())
}

/// The credential in a Claude Code credentials file.
fn imported(file: &Path, out: &mut dyn Write) -> Result<LoggedIn, String> {
    let text = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let tokens =
        import::from_claude_code(&text).map_err(|why| format!("{}: {why}", file.display()))?;
    // Refresh tokens are single-use: whichever of Claude Code and nexus refreshes first
    // leaves the other with a dead one.
    let _ = writeln!(
        out,
        "note: Claude Code keeps its own copy of this credential. Refresh tokens are \
         single-use, so once nexus or Claude Code refreshes it, the other's copy stops \
         working; log Claude Code in again (or use `nexus login` for a credential of \
         nexus's own) if you keep using both."
    );
    Ok(tokens)
}

/// The authorization-code flow with PKCE.
fn browser_flow(
    config: &Config,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<LoggedIn, String> {
    // A bad OAUTH_TOKEN_URL is reported before the user spends a code on it.
    let endpoint = TokenEndpoint::new(
        &config.oauth_token_url,
        || crate::client::tls::client_config(config.upstream_ca_file.as_deref()),
        config.oauth_timeout,
    )?;
    let pkce = Pkce::generate()?;
    let url = authorize_url(
        &AuthorizeTarget {
            authorize_url: &config.oauth_authorize_url,
            redirect_uri: &config.oauth_redirect_uri,
            scopes: &config.oauth_scopes,
        },
        &pkce,
    );
    let _ = writeln!(
        out,
        "Open this URL in a browser, log in with the Claude account and authorize:\n\n{url}\n"
    );
    let _ = write!(out, "Then paste the code the page shows (code#state): ");
    let _ = out.flush();
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the code from standard input: {e}"))?;
    let _ = writeln!(out);
    let pasted = paste::parse_paste(&line).map_err(|e| e.to_string())?;
    if pasted.state.as_deref().is_some_and(|s| s != pkce.state) {
        return Err(
            "the state in the pasted code does not match this login (it belongs to \
                    another login attempt, or was altered); run `nexus login` again and paste \
                    the code from its own URL"
                .into(),
        );
    }
    let grant = CodeGrant {
        code: &pasted.code,
        state: &pkce.state,
        verifier: &pkce.verifier,
        redirect_uri: &config.oauth_redirect_uri,
    };
    let new = endpoint.exchange_code(&grant).map_err(|e| match e {
        RefreshError::InvalidGrant => "the token endpoint refused the code (invalid_grant): \
                                       it has expired, was used already, or belongs to another \
                                       login; run `nexus login` again"
            .to_string(),
        RefreshError::Transient(why) => format!("the code exchange failed: {why}"),
    })?;
    let scopes = new
        .scope
        .as_deref()
        .unwrap_or(&config.oauth_scopes)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Ok(LoggedIn {
        access_token: new.access_token,
        refresh_token: new.refresh_token,
        expires_at: Some(new.expires_at),
        scopes,
        subscription_type: None,
    })
}

/// What was written, that a running nexus picks it up, and ownership warnings.
fn report(target: &Target, tokens: &LoggedIn, out: &mut dyn Write) {
    let expiry = match tokens.expires_at {
        Some(ms) => format!(
            "expires {}",
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
        ),
        None => "no expiry".into(),
    };
    let refresh = if tokens.refresh_token.is_some() {
        "nexus refreshes it before it expires"
    } else {
        "no refresh token: renew it by hand before it expires"
    };
    let what = match &target.member {
        Some(id) => format!("pool member {id}, oauth"),
        None => "oauth".into(),
    };
    let _ = writeln!(
        out,
        "Wrote {} ({what}, {expiry}; {refresh}).\nA running nexus picks it up by hot reload \
         within 2 s; no restart needed.",
        target.path.display()
    );
    for warning in ownership_warnings(&target.path) {
        let _ = writeln!(out, "warning: {warning}");
    }
}

/// nexus reads the file as, and refreshes it in the directory as, the user it runs as —
/// most likely the directory's owner. Warns when that user could not.
fn ownership_warnings(file: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut warnings = Vec::new();
    let (Some(dir), Ok(file_meta)) = (file.parent(), std::fs::metadata(file)) else {
        return warnings;
    };
    let Ok(dir_meta) = std::fs::metadata(dir) else {
        return warnings;
    };
    if dir_meta.mode() & 0o200 == 0 {
        warnings.push(format!(
            "{} is not writable by its owner (uid {}): a nexus running as that user cannot \
             refresh the token; chmod u+w it",
            dir.display(),
            dir_meta.uid()
        ));
    }
    if file_meta.uid() != dir_meta.uid() {
        warnings.push(format!(
            "{} belongs to uid {} (mode 0600) but the directory to uid {}: a nexus running \
             as the directory's owner cannot read it; chown it to the user nexus runs as",
            file.display(),
            file_meta.uid(),
            dir_meta.uid()
        ));
    }
    warnings
}
