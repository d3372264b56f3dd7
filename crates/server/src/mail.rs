//! Outgoing mail (account activation, password reset) over SMTP, when `WRENN_SMTP_URL` is set.
//! Without it, signups are active at once and reset tokens go to the log (routes/auth.rs, me.rs).

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("WRENN_SMTP_URL: {0}")]
    Url(String),
    #[error("sender address {0:?}: {1}")]
    From(String, String),
    #[error("recipient address {0:?}: {1}")]
    To(String, String),
    #[error("building the message: {0}")]
    Build(String),
    #[error("sending mail: {0}")]
    Send(String),
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Base of links in mails, e.g. `https://wrenn.example.com`.
    public_url: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The transport holds credentials: never print it.
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// `url` in lettre's format: `smtp://[user:pass@]host[:port]` (plain; `?tls=required` for
    /// STARTTLS) or `smtps://…` (implicit TLS).
    pub fn new(url: &str, from: &str, public_url: &str) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError::Url(e.to_string()))?
            .build();
        let from = from.parse().map_err(|e: lettre::address::AddressError| {
            MailError::From(from.to_owned(), e.to_string())
        })?;
        Ok(Self {
            transport,
            from,
            public_url: public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// A link into the web app, e.g. `link("/activate", token)`.
    pub fn link(&self, path: &str, token: &str) -> String {
        format!("{}{path}?token={token}", self.public_url)
    }

    pub async fn send(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|e: lettre::address::AddressError| {
            MailError::To(to.to_owned(), e.to_string())
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .body(body)
            .map_err(|e| MailError::Build(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map_err(|e| MailError::Send(e.to_string()))?;
        Ok(())
    }
}
