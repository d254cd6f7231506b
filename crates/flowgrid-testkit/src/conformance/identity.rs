//! Conformance checks for the identity stores: [`TenantStore`], [`UserStore`],
//! [`SessionStore`], [`SigningKeyStore`] and [`RevocationStore`].

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{Duration, Utc};
use flowgrid_domain::Error;
use flowgrid_domain::store::{
    RevocationStore, SessionStore, SigningKeyStore, StoredSigningKey, TenantStore, UserStore,
};
use flowgrid_domain::{
    Email, RefreshOutcome, RefreshToken, Session, Tenant, TenantId, User, UserId,
};

/// The identity stores of one backend (one type may implement them all).
#[derive(Clone)]
pub struct IdentityStores {
    /// Tenants.
    pub tenants: Arc<dyn TenantStore>,
    /// Users.
    pub users: Arc<dyn UserStore>,
    /// Sessions and refresh tokens.
    pub sessions: Arc<dyn SessionStore>,
    /// Signing keys.
    pub signing_keys: Arc<dyn SigningKeyStore>,
    /// The session denylist.
    pub revocations: Arc<dyn RevocationStore>,
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

/// A user of `tenant` with `email`.
pub fn new_user(tenant: &TenantId, email: &str) -> User {
    let now = Utc::now();
    User {
        id: UserId::new(),
        tenant_id: tenant.clone(),
        email: Email::parse(email).expect("email"),
        roles: vec!["editor".into()],
        disabled: false,
        password_hash: Some("$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into()),
        one_time_token: None,
        created_at: now,
        updated_at: now,
        etag: String::new(),
    }
}

fn session(tenant: &TenantId, user: UserId, lifetime: Duration) -> Session {
    let now = Utc::now();
    Session {
        id: format!("s{}", uuid::Uuid::new_v4().simple()),
        tenant_id: tenant.clone(),
        user_id: user,
        created_at: now,
        expires_at: now + lifetime,
        revoked_at: None,
    }
}

fn refresh(hash: &str, session: &str, lifetime: Duration) -> RefreshToken {
    let now = Utc::now();
    RefreshToken {
        hash: hash.into(),
        session_id: session.into(),
        issued_at: now,
        expires_at: now + lifetime,
    }
}

fn grace() -> Duration {
    Duration::seconds(10)
}

pub async fn tenants_are_stored_once_and_read_back(s: &IdentityStores) {
    let t = Tenant::create("Acme", Utc::now()).expect("tenant");
    s.tenants.insert(&t).await.expect("insert");
    let read = s.tenants.get(&t.id).await.expect("get");
    assert_eq!(read.name, "Acme");
    assert!(matches!(
        s.tenants.insert(&t).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        s.tenants.get(&tenant("missing")).await,
        Err(Error::NotFound)
    ));
}

pub async fn a_user_is_found_by_id_only_within_its_tenant(s: &IdentityStores) {
    let (a, b) = (tenant("ta"), tenant("tb"));
    let user = s
        .users
        .insert(&new_user(&a, "ann@example.com"))
        .await
        .expect("insert");
    assert!(!user.etag.is_empty());
    assert_eq!(s.users.get(&a, user.id).await.expect("get"), user);
    assert!(matches!(
        s.users.get(&b, user.id).await,
        Err(Error::NotFound)
    ));
}

pub async fn emails_are_unique_per_tenant_case_insensitively_and_found_across_tenants(
    s: &IdentityStores,
) {
    let (a, b) = (tenant("ta"), tenant("tb"));
    s.users
        .insert(&new_user(&a, "Ann@Example.com"))
        .await
        .expect("insert");
    assert!(matches!(
        s.users.insert(&new_user(&a, "ann@example.COM")).await,
        Err(Error::Conflict(_))
    ));
    s.users
        .insert(&new_user(&b, "ann@example.com"))
        .await
        .expect("other tenant");
    let found = s
        .users
        .find_by_email("ann@example.com")
        .await
        .expect("find");
    let tenants: HashSet<_> = found.iter().map(|u| u.tenant_id.clone()).collect();
    assert_eq!(tenants, HashSet::from([a, b]));
    assert!(
        s.users
            .find_by_email("nobody@example.com")
            .await
            .expect("find")
            .is_empty()
    );
}

pub async fn replacing_a_user_needs_the_current_etag(s: &IdentityStores) {
    let t = tenant("ta");
    let user = s
        .users
        .insert(&new_user(&t, "ann@example.com"))
        .await
        .expect("insert");
    let mut next = user.clone();
    next.disabled = true;
    let saved = s.users.replace(&next, &user.etag).await.expect("replace");
    assert!(saved.disabled);
    assert_ne!(saved.etag, user.etag);
    assert!(matches!(
        s.users.replace(&next, &user.etag).await,
        Err(Error::PreconditionFailed)
    ));
    let mut stranger = new_user(&t, "bob@example.com");
    stranger.etag = "x".into();
    assert!(matches!(
        s.users.replace(&stranger, "x").await,
        Err(Error::NotFound)
    ));
    assert!(s.users.get(&t, user.id).await.expect("get").disabled);
}

pub async fn users_list_pages_without_gaps_or_repeats_within_the_tenant(s: &IdentityStores) {
    let (a, b) = (tenant("ta"), tenant("tb"));
    for i in 0..7 {
        s.users
            .insert(&new_user(&a, &format!("u{i}@example.com")))
            .await
            .expect("insert");
    }
    s.users
        .insert(&new_user(&b, "other@example.com"))
        .await
        .expect("insert");
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = s.users.list(&a, 3, token.as_deref()).await.expect("list");
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|u| u.email.as_str().to_owned()));
        match page.continuation_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);
    assert!(!seen.contains(&"other@example.com".to_owned()));
    assert!(matches!(
        s.users.list(&a, 3, Some("forged!")).await,
        Err(Error::BadRequest(_))
    ));
}

pub async fn a_refresh_token_rotates_once_and_its_successor_works(s: &IdentityStores) {
    let t = tenant("ta");
    let sess = session(&t, UserId::new(), Duration::days(1));
    s.sessions
        .create(&sess, &refresh("h1", &sess.id, Duration::hours(1)))
        .await
        .expect("create");
    let now = Utc::now();
    match s
        .sessions
        .rotate(
            "h1",
            &refresh("h2", "ignored", Duration::hours(1)),
            now,
            grace(),
        )
        .await
    {
        Ok(RefreshOutcome::Rotated(got)) => assert_eq!(got.id, sess.id),
        other => panic!("expected rotation, got {other:?}"),
    }
    match s
        .sessions
        .rotate(
            "h2",
            &refresh("h3", "ignored", Duration::hours(1)),
            now,
            grace(),
        )
        .await
    {
        Ok(RefreshOutcome::Rotated(got)) => assert_eq!(got.id, sess.id),
        other => panic!("expected rotation of the successor, got {other:?}"),
    }
    assert_eq!(
        s.sessions
            .rotate(
                "nope",
                &refresh("h4", "x", Duration::hours(1)),
                now,
                grace()
            )
            .await
            .expect("rotate"),
        RefreshOutcome::Invalid
    );
}

pub async fn a_spent_token_presented_within_the_grace_window_rotates_again(s: &IdentityStores) {
    let t = tenant("ta");
    let sess = session(&t, UserId::new(), Duration::days(1));
    s.sessions
        .create(&sess, &refresh("h1", &sess.id, Duration::hours(1)))
        .await
        .expect("create");
    let now = Utc::now();
    let first = s
        .sessions
        .rotate("h1", &refresh("h2", "x", Duration::hours(1)), now, grace())
        .await
        .expect("first");
    let second = s
        .sessions
        .rotate(
            "h1",
            &refresh("h3", "x", Duration::hours(1)),
            now + Duration::seconds(2),
            grace(),
        )
        .await
        .expect("second");
    assert!(matches!(first, RefreshOutcome::Rotated(_)));
    assert!(matches!(second, RefreshOutcome::Rotated(_)));
    for next in ["h2", "h3"] {
        let out = s
            .sessions
            .rotate(
                next,
                &refresh(&format!("{next}-n"), "x", Duration::hours(1)),
                now + Duration::seconds(3),
                grace(),
            )
            .await
            .expect("successor");
        assert!(matches!(out, RefreshOutcome::Rotated(_)), "{next}: {out:?}");
    }
}

pub async fn a_spent_token_presented_after_the_grace_window_revokes_the_family(s: &IdentityStores) {
    let t = tenant("ta");
    let sess = session(&t, UserId::new(), Duration::days(1));
    s.sessions
        .create(&sess, &refresh("h1", &sess.id, Duration::hours(1)))
        .await
        .expect("create");
    let now = Utc::now();
    s.sessions
        .rotate("h1", &refresh("h2", "x", Duration::hours(1)), now, grace())
        .await
        .expect("rotate");
    let later = now + Duration::seconds(30);
    match s
        .sessions
        .rotate(
            "h1",
            &refresh("h3", "x", Duration::hours(1)),
            later,
            grace(),
        )
        .await
    {
        Ok(RefreshOutcome::Reused(got)) => {
            assert_eq!(got.id, sess.id);
            assert!(got.revoked_at.is_some());
        }
        other => panic!("expected reuse, got {other:?}"),
    }
    // The current member of the family is dead too.
    assert_eq!(
        s.sessions
            .rotate(
                "h2",
                &refresh("h4", "x", Duration::hours(1)),
                later,
                grace()
            )
            .await
            .expect("rotate"),
        RefreshOutcome::Invalid
    );
    assert!(
        s.sessions
            .get(&t, &sess.id)
            .await
            .expect("get")
            .revoked_at
            .is_some()
    );
}

pub async fn expired_tokens_and_revoked_or_ended_sessions_do_not_rotate(s: &IdentityStores) {
    let t = tenant("ta");
    let now = Utc::now();
    let user = UserId::new();
    let a = session(&t, user, Duration::days(1));
    s.sessions
        .create(&a, &refresh("a1", &a.id, Duration::seconds(5)))
        .await
        .expect("create");
    assert_eq!(
        s.sessions
            .rotate(
                "a1",
                &refresh("a2", "x", Duration::hours(1)),
                now + Duration::seconds(6),
                grace()
            )
            .await
            .expect("rotate"),
        RefreshOutcome::Invalid
    );
    let b = session(&t, user, Duration::days(1));
    s.sessions
        .create(&b, &refresh("b1", &b.id, Duration::hours(1)))
        .await
        .expect("create");
    s.sessions.revoke(&t, &b.id, now).await.expect("revoke");
    assert_eq!(
        s.sessions
            .rotate("b1", &refresh("b2", "x", Duration::hours(1)), now, grace())
            .await
            .expect("rotate"),
        RefreshOutcome::Invalid
    );
    let c = session(&t, user, Duration::seconds(5));
    s.sessions
        .create(&c, &refresh("c1", &c.id, Duration::hours(1)))
        .await
        .expect("create");
    assert_eq!(
        s.sessions
            .rotate(
                "c1",
                &refresh("c2", "x", Duration::hours(1)),
                now + Duration::seconds(6),
                grace()
            )
            .await
            .expect("rotate"),
        RefreshOutcome::Invalid
    );
    assert!(matches!(
        s.sessions.revoke(&tenant("tb"), &a.id, now).await,
        Err(Error::NotFound)
    ));
}

pub async fn a_successor_never_outlives_its_session(s: &IdentityStores) {
    let t = tenant("ta");
    let sess = session(&t, UserId::new(), Duration::seconds(20));
    s.sessions
        .create(&sess, &refresh("h1", &sess.id, Duration::hours(1)))
        .await
        .expect("create");
    let now = Utc::now();
    s.sessions
        .rotate("h1", &refresh("h2", "x", Duration::days(30)), now, grace())
        .await
        .expect("rotate");
    assert_eq!(
        s.sessions
            .rotate(
                "h2",
                &refresh("h3", "x", Duration::hours(1)),
                now + Duration::seconds(25),
                grace()
            )
            .await
            .expect("rotate"),
        RefreshOutcome::Invalid
    );
}

pub async fn revoking_a_user_revokes_only_their_live_sessions(s: &IdentityStores) {
    let t = tenant("ta");
    let (ann, bob) = (UserId::new(), UserId::new());
    let now = Utc::now();
    let a1 = session(&t, ann, Duration::days(1));
    let a2 = session(&t, ann, Duration::days(1));
    let b1 = session(&t, bob, Duration::days(1));
    for (sess, hash) in [(&a1, "a1"), (&a2, "a2"), (&b1, "b1")] {
        s.sessions
            .create(sess, &refresh(hash, &sess.id, Duration::hours(1)))
            .await
            .expect("create");
    }
    s.sessions.revoke(&t, &a2.id, now).await.expect("revoke");
    let revoked = s
        .sessions
        .revoke_all_of_user(&t, ann, now)
        .await
        .expect("revoke all");
    assert_eq!(
        revoked.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![a1.id.clone()]
    );
    assert!(
        s.sessions
            .get(&t, &a1.id)
            .await
            .expect("get")
            .revoked_at
            .is_some()
    );
    assert!(
        s.sessions
            .get(&t, &b1.id)
            .await
            .expect("get")
            .revoked_at
            .is_none()
    );
    assert!(
        s.sessions
            .revoke_all_of_user(&tenant("tb"), bob, now)
            .await
            .expect("other tenant")
            .is_empty()
    );
}

pub async fn concurrent_rotations_of_one_token_both_succeed(s: &IdentityStores) {
    let t = tenant("ta");
    let sess = session(&t, UserId::new(), Duration::days(1));
    s.sessions
        .create(&sess, &refresh("h1", &sess.id, Duration::hours(1)))
        .await
        .expect("create");
    let now = Utc::now();
    let (next_x, next_y) = (
        refresh("hx", "x", Duration::hours(1)),
        refresh("hy", "x", Duration::hours(1)),
    );
    let (x, y) = tokio::join!(
        s.sessions.rotate("h1", &next_x, now, grace()),
        s.sessions.rotate("h1", &next_y, now, grace()),
    );
    assert!(matches!(x, Ok(RefreshOutcome::Rotated(_))), "{x:?}");
    assert!(matches!(y, Ok(RefreshOutcome::Rotated(_))), "{y:?}");
}

pub async fn purging_removes_ended_sessions_and_expired_tokens_only(s: &IdentityStores) {
    let t = tenant("ta");
    let now = Utc::now();
    let user = UserId::new();
    let ended = session(&t, user, Duration::seconds(5));
    let live = session(&t, user, Duration::days(1));
    s.sessions
        .create(&ended, &refresh("e1", &ended.id, Duration::hours(1)))
        .await
        .expect("create");
    s.sessions
        .create(&live, &refresh("l1", &live.id, Duration::seconds(5)))
        .await
        .expect("create");
    s.sessions
        .rotate("l1", &refresh("l2", "x", Duration::hours(1)), now, grace())
        .await
        .expect("rotate");
    let later = now + Duration::seconds(10);
    assert!(s.sessions.purge_expired(later).await.expect("purge") >= 3);
    assert!(matches!(
        s.sessions.get(&t, &ended.id).await,
        Err(Error::NotFound)
    ));
    assert!(s.sessions.get(&t, &live.id).await.is_ok());
    // The live session's current token still rotates.
    let out = s
        .sessions
        .rotate(
            "l2",
            &refresh("l3", "x", Duration::hours(1)),
            later,
            grace(),
        )
        .await
        .expect("rotate");
    assert!(matches!(out, RefreshOutcome::Rotated(_)), "{out:?}");
}

fn key(kid: &str, age_secs: i64) -> StoredSigningKey {
    StoredSigningKey {
        kid: kid.into(),
        alg: "EdDSA".into(),
        public_jwk: format!(r#"{{"kid":"{kid}"}}"#),
        encrypted_private: "c2VhbGVk".into(),
        kek_id: "kek".into(),
        created_at: Utc::now() - Duration::seconds(age_secs),
        retired_at: None,
    }
}

pub async fn signing_keys_are_listed_newest_first_retired_and_deleted(s: &IdentityStores) {
    s.signing_keys
        .insert(&key("old", 100))
        .await
        .expect("insert");
    s.signing_keys
        .insert(&key("new", 10))
        .await
        .expect("insert");
    assert!(matches!(
        s.signing_keys.insert(&key("new", 10)).await,
        Err(Error::Conflict(_))
    ));
    let kids: Vec<_> = s
        .signing_keys
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, ["new", "old"]);
    let now = Utc::now();
    s.signing_keys
        .retire_all_except("new", now - Duration::hours(3))
        .await
        .expect("retire");
    let keys = s.signing_keys.list().await.expect("list");
    assert!(
        keys.iter()
            .find(|k| k.kid == "new")
            .expect("new")
            .retired_at
            .is_none()
    );
    assert!(
        keys.iter()
            .find(|k| k.kid == "old")
            .expect("old")
            .retired_at
            .is_some()
    );
    assert_eq!(
        s.signing_keys
            .delete_retired_before(now - Duration::hours(2))
            .await
            .expect("delete"),
        1
    );
    let kids: Vec<_> = s
        .signing_keys
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids, ["new"]);
}

pub async fn revoked_sessions_stay_denied_until_purged_after_expiry(s: &IdentityStores) {
    let now = Utc::now();
    assert!(!s.revocations.is_revoked("s1").await.expect("check"));
    s.revocations
        .revoke("s1", now + Duration::minutes(5))
        .await
        .expect("revoke");
    s.revocations
        .revoke("s2", now - Duration::minutes(5))
        .await
        .expect("revoke");
    s.revocations
        .revoke("s1", now + Duration::minutes(1))
        .await
        .expect("revoke again");
    assert!(s.revocations.is_revoked("s1").await.expect("check"));
    assert_eq!(s.revocations.purge_expired(now).await.expect("purge"), 1);
    assert!(s.revocations.is_revoked("s1").await.expect("check"));
    assert!(!s.revocations.is_revoked("s2").await.expect("check"));
    // Revoking again never shortens the entry.
    assert_eq!(
        s.revocations
            .purge_expired(now + Duration::minutes(2))
            .await
            .expect("purge"),
        0
    );
}
