//! First-run setup for `wrenn up`: an active platform-admin user with a team and an API key.

use crate::accounts;
use crate::audit::{self, AuditActor, AuditEvent};
use crate::db::users::{User, UserStatus};
use crate::db::{Db, users};
use crate::ids::{TeamId, UserId};

#[derive(Debug, Clone)]
pub struct Bootstrapped {
    pub user_id: UserId,
    pub team_id: TeamId,
    pub email: String,
    /// `wrn_…`: shown once; only its hash is stored.
    pub api_key: String,
    /// False when the user already existed (it was made active and admin if needed).
    pub created_user: bool,
}

/// Ensures an active platform admin `email` (created with `password`, if given, when missing)
/// and creates a new API key for their default team. Each call creates one more key.
pub async fn bootstrap_admin(
    db: &Db,
    email: &str,
    name: &str,
    password: Option<&str>,
) -> anyhow::Result<Bootstrapped> {
    let email = accounts::normalize_email(email).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let name = accounts::validate_name(name).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let password_hash = match password {
        Some(p) => {
            accounts::validate_password(p).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            Some(crate::auth::password::hash(p.to_owned()).await?)
        }
        None => None,
    };
    let now = crate::time::now();
    let mut tx = db.pool().begin().await?;
    let (mut user, created_user) = match users::by_email(&mut *tx, &email).await? {
        Some(u) => (u, false),
        None => {
            let user = User {
                id: UserId::random(),
                email: email.clone(),
                password_hash,
                name,
                is_admin: true,
                status: UserStatus::Active,
                created_at: now,
                updated_at: now,
            };
            users::insert(&mut *tx, &user).await?;
            (user, true)
        }
    };
    anyhow::ensure!(
        user.status != UserStatus::Deleted,
        "user {email} is deleted"
    );
    if user.status != UserStatus::Active {
        users::set_status(&mut *tx, user.id, UserStatus::Active, now).await?;
        user.status = UserStatus::Active;
    }
    if !user.is_admin {
        users::set_admin(&mut *tx, user.id, true, now).await?;
        user.is_admin = true;
    }
    let membership = accounts::ensure_default_team(&mut tx, &user).await?;
    let (key, plaintext) =
        accounts::create_api_key(&mut tx, membership.team.id, "wrenn up", Some(user.id)).await?;
    audit::record(
        &mut *tx,
        membership.team.id,
        AuditActor::system(),
        AuditEvent::new("api_key", key.id.to_string(), "create")
            .metadata(serde_json::json!({ "name": key.name, "bootstrap": true })),
    )
    .await?;
    tx.commit().await?;
    Ok(Bootstrapped {
        user_id: user.id,
        team_id: membership.team.id,
        email,
        api_key: plaintext,
        created_user,
    })
}
