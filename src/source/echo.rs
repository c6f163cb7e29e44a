//! Echo detection: recognises change events caused by forcebridge's own write-backs.
//!
//! Contract:
//! * Every REST write of the sink carries `Sforce-Call-Options: client=<tag>`; Salesforce copies
//!   the tag into the change event's `changeOrigin`
//!   (`com/salesforce/api/rest/62.0;client=<tag>`). An event is an echo when one `;`-separated
//!   part of its `changeOrigin` is exactly `client=<tag>` (so `client=<tag>-other` is not).
//! * Optionally, an event committed by one of the configured users (the integration user) is an
//!   echo too, whatever its origin. User Ids compare on their case-sensitive 15-character form,
//!   so 15- and 18-character Ids match each other.
//! * Platform Events have no change header and are never echoes.

use crate::salesforce::sfid::id15;
use crate::source::cdc::Commit;

/// Why an event is an echo (the value of the `forcebridge.echo` header when marked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoReason {
    /// `changeOrigin` carries our client tag.
    ClientTag,
    /// `commitUser` is one of the configured users.
    CommitUser,
}

impl EchoReason {
    /// Header value.
    pub fn as_str(self) -> &'static str {
        match self {
            EchoReason::ClientTag => "client_tag",
            EchoReason::CommitUser => "commit_user",
        }
    }
}

/// The rule of one source.
#[derive(Debug, Clone)]
pub struct EchoRule {
    /// `client=<tag>`.
    client_part: String,
    /// 15-character user Ids.
    users: Vec<String>,
}

impl EchoRule {
    /// Echoes are events tagged `client=<tag>` or committed by one of `users`.
    pub fn new(tag: &str, users: impl IntoIterator<Item = String>) -> Self {
        Self {
            client_part: format!("client={tag}"),
            users: users.into_iter().map(|u| id15(&u).to_owned()).collect(),
        }
    }

    /// Why the change event `commit` describes is an echo, if it is one.
    pub fn check(&self, commit: &Commit) -> Option<EchoReason> {
        let tagged = commit.change_origin.as_deref().is_some_and(|origin| {
            origin
                .split(';')
                .any(|part| part.trim() == self.client_part)
        });
        if tagged {
            return Some(EchoReason::ClientTag);
        }
        let user = id15(&commit.commit_user);
        self.users
            .iter()
            .any(|u| u == user)
            .then_some(EchoReason::CommitUser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(origin: Option<&str>, user: &str) -> Commit {
        Commit {
            change_origin: origin.map(str::to_owned),
            commit_user: user.into(),
        }
    }

    #[test]
    fn matches_the_exact_client_part_only() {
        let rule = EchoRule::new("forcebridge", []);
        let user = "005000000000001AAA";
        for (origin, expected) in [
            (
                Some("com/salesforce/api/rest/62.0;client=forcebridge"),
                Some(EchoReason::ClientTag),
            ),
            (
                Some("com/salesforce/api/rest/62.0; client=forcebridge"),
                Some(EchoReason::ClientTag),
            ),
            (
                Some("com/salesforce/api/rest/62.0;client=forcebridge-x"),
                None,
            ),
            (Some("com/salesforce/api/rest/62.0;client=sfdx"), None),
            (Some("com/salesforce/api/rest/62.0"), None),
            (Some("forcebridge"), None),
            (None, None),
        ] {
            assert_eq!(rule.check(&header(origin, user)), expected, "{origin:?}");
        }
    }

    #[test]
    fn commit_users_match_in_15_and_18_character_forms() {
        let rule = EchoRule::new("fb", ["0055S0000000INT".to_owned()]);
        assert_eq!(
            rule.check(&header(None, "0055S0000000INTAAA")),
            Some(EchoReason::CommitUser)
        );
        assert_eq!(rule.check(&header(None, "0055S0000000INX")), None);
        let rule = EchoRule::new("fb", ["0055S0000000INTAAA".to_owned()]);
        assert_eq!(
            rule.check(&header(Some("x;client=y"), "0055S0000000INT")),
            Some(EchoReason::CommitUser)
        );
    }
}
