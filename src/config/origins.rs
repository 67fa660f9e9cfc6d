//! Browser origins allowed to open a socket (`RELAIS_ALLOWED_ORIGINS`).

use super::Env;

/// Which `Origin` headers may open a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Any origin (`RELAIS_ALLOWED_ORIGINS=*`).
    Any,
    /// Same origin as the hub (the `Host` header) plus this list.
    List(Vec<String>),
}

impl OriginPolicy {
    /// Requests without an `Origin` header come from non-browser clients and
    /// are allowed: the header is a browser protection, not authentication.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::List(list) => {
                let same_origin = host.is_some_and(|host| {
                    origin
                        .split_once("://")
                        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
                });
                same_origin || list.iter().any(|o| o.eq_ignore_ascii_case(origin))
            }
        }
    }

    /// `*` for any origin, else a comma-separated list (empty when unset).
    pub(super) fn from_env(env: &Env) -> Self {
        match env.get("RELAIS_ALLOWED_ORIGINS") {
            Some("*") => OriginPolicy::Any,
            Some(list) => OriginPolicy::List(
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            None => OriginPolicy::List(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OriginPolicy;

    #[test]
    fn origin_policy_allows_same_origin_and_listed_origins_only() {
        let p = OriginPolicy::List(vec!["https://app.example.com".into()]);
        assert!(p.allows(None, Some("hub:8080")));
        assert!(p.allows(Some("http://hub:8080"), Some("hub:8080")));
        assert!(p.allows(Some("https://app.example.com"), Some("hub:8080")));
        assert!(!p.allows(Some("https://evil.example"), Some("hub:8080")));
        assert!(OriginPolicy::Any.allows(Some("https://evil.example"), None));
    }
}
