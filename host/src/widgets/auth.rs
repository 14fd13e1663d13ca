//! Client authentication for the widget server.
//!
//! Two credentials, either or both configured:
//! - the seed's **shared key** (`{"action":"auth","api_key":"…"}`), compared
//!   in constant time; it grants every feed;
//! - **signed tokens** (JWT, HS256 with a shared secret or EdDSA with an
//!   Ed25519 public key), sent as `{"action":"auth","token":"…"}` (or in the
//!   `api_key` field, for the seed's front end). A token must carry `exp`;
//!   its optional `feeds` claim lists the glob patterns the client may
//!   subscribe to and read; without it every feed is allowed. The
//!   connection is closed when the token expires.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Why a client was not let in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The shared key is wrong (or none is configured).
    #[error("invalid key")]
    InvalidKey,
    /// The token is malformed, badly signed or uses another algorithm.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token's `exp` has passed.
    #[error("token expired")]
    Expired,
}

/// Problems with the server's auth settings.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// The Ed25519 public key file cannot be read.
    #[error("cannot read the JWT public key {path}: {source}")]
    ReadKey {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is not an Ed25519 public key in PEM.
    #[error("the JWT public key {path} is not an Ed25519 PEM public key: {source}")]
    BadKey {
        /// The file.
        path: String,
        /// Why.
        source: jsonwebtoken::errors::Error,
    },
    /// Auth is on but no credential is configured.
    #[error(
        "AUTH_ENABLED is set but no credential is configured: set AUTH_API_KEY, \
         --jwt-secret or --jwt-public-key (or disable auth)"
    )]
    Nothing,
}

/// The claims of a widget token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
    /// Who the token is for (informational; logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Glob patterns of the feeds and cache keys allowed; absent = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feeds: Option<Vec<String>>,
}

/// What an authenticated client may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Allowed feed patterns; `None` = every feed.
    pub feeds: Option<Vec<String>>,
    /// When the credential stops being valid.
    pub expires: Option<SystemTime>,
    /// The token's subject, if any.
    pub subject: Option<String>,
}

impl Grant {
    /// Everything, forever (auth off or the shared key).
    pub fn all() -> Grant {
        Grant {
            feeds: None,
            expires: None,
            subject: None,
        }
    }

    /// May the client subscribe to or read `feed`? A concrete name must match
    /// an allowed pattern; a requested pattern must equal an allowed one or
    /// start with the literal prefix of an allowed `prefix*` pattern, so a
    /// pattern can never reach more than the grant.
    pub fn allows(&self, feed: &str) -> bool {
        let Some(allowed) = &self.feeds else {
            return true;
        };
        let is_pattern = feed.contains(['*', '?', '[', '\\']);
        allowed.iter().any(|p| {
            if !is_pattern {
                return crate::store::glob::matches(p, feed);
            }
            if p == feed {
                return true;
            }
            match p.strip_suffix('*') {
                Some(prefix) if !prefix.contains(['*', '?', '[', '\\']) => feed.starts_with(prefix),
                _ => false,
            }
        })
    }
}

/// Verifies the credentials clients present.
pub struct Authenticator {
    shared_key: Option<String>,
    hs256: Option<DecodingKey>,
    eddsa: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("shared_key", &self.shared_key.is_some())
            .field("hs256", &self.hs256.is_some())
            .field("eddsa", &self.eddsa.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// Clock skew tolerated on `exp`, seconds.
const LEEWAY_SECS: u64 = 5;

impl Authenticator {
    /// Build from settings; `Ok(None)` when auth is off. Auth is on when
    /// `enabled` or when a JWT key is configured.
    pub fn new(
        enabled: bool,
        shared_key: Option<&str>,
        jwt_secret: Option<&str>,
        jwt_public_key: Option<&Path>,
    ) -> Result<Option<Authenticator>, AuthConfigError> {
        let shared_key = shared_key.filter(|k| !k.is_empty()).map(str::to_string);
        let hs256 = jwt_secret
            .filter(|s| !s.is_empty())
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        let eddsa = match jwt_public_key {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| AuthConfigError::ReadKey {
                    path: path.display().to_string(),
                    source,
                })?;
                Some(
                    DecodingKey::from_ed_pem(&pem).map_err(|source| AuthConfigError::BadKey {
                        path: path.display().to_string(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        if !enabled && hs256.is_none() && eddsa.is_none() {
            return Ok(None);
        }
        if shared_key.is_none() && hs256.is_none() && eddsa.is_none() {
            return Err(AuthConfigError::Nothing);
        }
        Ok(Some(Authenticator {
            shared_key,
            hs256,
            eddsa,
            issuer: None,
            audience: None,
        }))
    }

    /// Require tokens to carry this `iss` and `aud` (each unchecked when `None`).
    pub fn expecting(mut self, issuer: Option<&str>, audience: Option<&str>) -> Authenticator {
        self.issuer = issuer.filter(|s| !s.is_empty()).map(str::to_string);
        self.audience = audience.filter(|s| !s.is_empty()).map(str::to_string);
        self
    }

    /// Whether tokens are accepted.
    pub fn accepts_tokens(&self) -> bool {
        self.hs256.is_some() || self.eddsa.is_some()
    }

    /// Check the shared key in constant time. With tokens configured, a
    /// value shaped like a JWT is verified as a token instead (the seed's
    /// front end only knows the `api_key` field).
    pub fn check_key(&self, given: &str) -> Result<Grant, AuthError> {
        if let Some(key) = &self.shared_key
            && bool::from(given.as_bytes().ct_eq(key.as_bytes()))
        {
            return Ok(Grant::all());
        }
        if self.accepts_tokens() && given.split('.').count() == 3 {
            return self.check_token(given);
        }
        Err(AuthError::InvalidKey)
    }

    /// Verify a token's signature, algorithm, expiry, `nbf` (when present),
    /// and `iss` / `aud` when configured.
    pub fn check_token(&self, token: &str) -> Result<Grant, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::EdDSA => self.eddsa.as_ref(),
            _ => None,
        }
        .ok_or_else(|| {
            AuthError::InvalidToken(format!("algorithm {:?} not accepted", header.alg))
        })?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|e| match e
            .kind()
        {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::InvalidToken(e.to_string()),
        })?;
        let claims = data.claims;
        Ok(Grant {
            feeds: claims.feeds,
            expires: Some(UNIX_EPOCH + Duration::from_secs(claims.exp + LEEWAY_SECS)),
            subject: claims.sub,
        })
    }
}

/// Sign an HS256 widget token valid for `ttl` allowing `feeds` (all when
/// `None`) — what an operator's login service would issue.
pub fn mint_hs256(
    secret: &str,
    subject: Option<&str>,
    feeds: Option<Vec<String>>,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(ttl)
        .as_secs();
    let claims = Claims {
        exp,
        sub: subject.map(str::to_string),
        feeds,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(feeds: &[&str]) -> Grant {
        Grant {
            feeds: Some(feeds.iter().map(|s| s.to_string()).collect()),
            ..Grant::all()
        }
    }

    /// An HS256 token signed with `secret` carrying `claims`.
    fn signed(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    }

    #[test]
    fn nbf_iss_and_aud_are_checked_when_configured() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let exp = now + 600;
        let auth = Authenticator::new(true, None, Some("s"), None)
            .unwrap()
            .unwrap();
        let early = signed("s", serde_json::json!({"exp": exp, "nbf": now + 300}));
        assert!(auth.check_token(&early).is_err(), "a token not yet valid");
        let plain = signed("s", serde_json::json!({"exp": exp}));
        assert!(auth.check_token(&plain).is_ok(), "no iss/aud configured");

        let auth = auth.expecting(Some("login.example"), Some("mdp-widgets"));
        let good = signed(
            "s",
            serde_json::json!({"exp": exp, "nbf": now, "iss": "login.example", "aud": "mdp-widgets"}),
        );
        assert!(auth.check_token(&good).is_ok());
        for claims in [
            serde_json::json!({"exp": exp, "iss": "evil.example", "aud": "mdp-widgets"}),
            serde_json::json!({"exp": exp, "iss": "login.example", "aud": "other"}),
            serde_json::json!({"exp": exp, "aud": "mdp-widgets"}),
            serde_json::json!({"exp": exp, "iss": "login.example"}),
        ] {
            let token = signed("s", claims.clone());
            assert!(auth.check_token(&token).is_err(), "accepted {claims}");
        }
    }

    #[test]
    fn patterns_never_exceed_the_grant() {
        let g = grant(&["quote:*", "news:feed:latest", "x:?"]);
        assert!(g.allows("quote:AAA"));
        assert!(g.allows("quote:*"));
        assert!(g.allows("quote:A*"));
        assert!(g.allows("news:feed:latest"));
        assert!(!g.allows("news:*"));
        assert!(!g.allows("*"));
        assert!(g.allows("x:1"));
        assert!(!g.allows("x:*"), "`?` in the grant does not cover `*`");
        assert!(!g.allows("scanners:top_volume"));
        assert!(Grant::all().allows("anything:*"));
    }

    #[test]
    fn tokens_are_checked_for_signature_algorithm_and_expiry() {
        let auth = Authenticator::new(true, Some("k"), Some("secret"), None)
            .unwrap()
            .unwrap();
        let ok = mint_hs256(
            "secret",
            Some("u"),
            Some(vec!["a:*".into()]),
            Duration::from_secs(60),
        )
        .unwrap();
        let g = auth.check_token(&ok).unwrap();
        assert_eq!(g.feeds, Some(vec!["a:*".to_string()]));
        assert_eq!(auth.check_key(&ok).unwrap(), g, "a token in api_key works");
        assert_eq!(auth.check_key("k").unwrap(), Grant::all());
        assert_eq!(auth.check_key("kk"), Err(AuthError::InvalidKey));
        let forged = mint_hs256("other", None, None, Duration::from_secs(60)).unwrap();
        assert!(matches!(
            auth.check_token(&forged),
            Err(AuthError::InvalidToken(_))
        ));
        let claims = Claims {
            exp: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                - 120,
            sub: None,
            feeds: None,
        };
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert_eq!(auth.check_token(&old), Err(AuthError::Expired));
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &Claims {
                exp: claims.exp + 1000,
                ..claims
            },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(matches!(
            auth.check_token(&hs384),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn settings() {
        assert!(
            Authenticator::new(false, Some("k"), None, None)
                .unwrap()
                .is_none()
        );
        assert!(
            Authenticator::new(false, None, Some("s"), None)
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            Authenticator::new(true, Some(""), None, None),
            Err(AuthConfigError::Nothing)
        ));
    }
}
