//! Topic names: a template (`{object}`, `{channel}`) rendered and checked as a legal Kafka topic.
//!
//! Contract: [`render_topic`] either returns a name Kafka accepts (legal characters, at most 249
//! of them, not `.` or `..`) or an error naming the template and what is wrong with it.
//! [`TopicTemplates`] is the same rule as the config's check of its topics.

use crate::config::TopicChecks;

/// A topic name template is invalid or renders an illegal Kafka topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    /// The template holds a `{...}` placeholder other than `{object}` and `{channel}`.
    #[error(
        "topic template {template:?}: unknown placeholder {placeholder:?} (use {{object}} or {{channel}})"
    )]
    UnknownPlaceholder {
        /// The template.
        template: String,
        /// The unknown placeholder, braces included.
        placeholder: String,
    },
    /// The rendered name holds a character Kafka does not allow (only `a-z A-Z 0-9 . _ -`).
    #[error(
        "topic template {template:?} renders {topic:?}, which contains {character:?}: Kafka topic names allow only ASCII letters, digits, '.', '_' and '-'"
    )]
    IllegalCharacter {
        /// The template.
        template: String,
        /// The rendered name.
        topic: String,
        /// The first illegal character.
        character: char,
    },
    /// The rendered name is empty, `.`, `..`, or longer than 249 characters.
    #[error(
        "topic template {template:?} renders {topic:?}, which is not a legal Kafka topic name: {reason}"
    )]
    IllegalName {
        /// The template.
        template: String,
        /// The rendered name.
        topic: String,
        /// Why it is illegal.
        reason: &'static str,
    },
}

/// Longest legal Kafka topic name.
const MAX_TOPIC_LEN: usize = 249;

/// Renders a topic name from `template`: `{object}` is replaced by `object`, `{channel}` by the
/// channel name without its leading `/` and with `/` turned into `.` (`/data/AccountChangeEvent`
/// → `data.AccountChangeEvent`). The result must be a legal Kafka topic name.
pub fn render_topic(template: &str, object: &str, channel: &str) -> Result<String, TopicNameError> {
    let channel = channel
        .strip_prefix('/')
        .unwrap_or(channel)
        .replace('/', ".");
    let mut topic = String::with_capacity(template.len() + object.len() + channel.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        topic.push_str(&rest[..start]);
        let after = &rest[start..];
        let end = after.find('}').map_or(after.len(), |i| i + 1);
        match &after[..end] {
            "{object}" => topic.push_str(object),
            "{channel}" => topic.push_str(&channel),
            other => {
                return Err(TopicNameError::UnknownPlaceholder {
                    template: template.to_owned(),
                    placeholder: other.to_owned(),
                });
            }
        }
        rest = &after[end..];
    }
    topic.push_str(rest);

    let illegal = |reason| TopicNameError::IllegalName {
        template: template.to_owned(),
        topic: topic.clone(),
        reason,
    };
    if topic.is_empty() {
        return Err(illegal("it is empty"));
    }
    if topic == "." || topic == ".." {
        return Err(illegal("'.' and '..' are reserved"));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(illegal("it is longer than 249 characters"));
    }
    if let Some(character) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicNameError::IllegalCharacter {
            template: template.to_owned(),
            topic,
            character,
        });
    }
    Ok(topic)
}

/// Kafka's check of the config's topic names and templates (see [`TopicChecks`]).
pub(crate) struct TopicTemplates;

impl TopicChecks for TopicTemplates {
    fn check_topic(&self, template: &str, object: &str, channel: &str) -> Result<(), String> {
        render_topic(template, object, channel)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_object_and_channel() {
        assert_eq!(
            render_topic("sf.{object}", "Account", "/data/AccountChangeEvent").unwrap(),
            "sf.Account"
        );
        assert_eq!(
            render_topic("cdc-{channel}", "Account", "/data/AccountChangeEvent").unwrap(),
            "cdc-data.AccountChangeEvent"
        );
        assert_eq!(
            render_topic("{channel}_{object}", "Order__c", "/event/Order_Event__e").unwrap(),
            "event.Order_Event__e_Order__c"
        );
        assert_eq!(render_topic("fixed", "A", "/x").unwrap(), "fixed");
    }

    #[test]
    fn rejects_illegal_characters_naming_template_and_char() {
        let err = render_topic("sf/{object}", "Account", "/data/X").unwrap_err();
        assert_eq!(
            err,
            TopicNameError::IllegalCharacter {
                template: "sf/{object}".into(),
                topic: "sf/Account".into(),
                character: '/',
            }
        );
        let msg = err.to_string();
        assert!(msg.contains("sf/{object}") && msg.contains("'/'"), "{msg}");
        let err = render_topic("sf {object}", "Account", "/x").unwrap_err();
        assert!(matches!(
            err,
            TopicNameError::IllegalCharacter { character: ' ', .. }
        ));
        let err = render_topic("sf.{object}", "Accöunt", "/x").unwrap_err();
        assert!(matches!(
            err,
            TopicNameError::IllegalCharacter {
                character: 'ö', ..
            }
        ));
    }

    #[test]
    fn rejects_unknown_placeholders_and_bad_names() {
        assert!(matches!(
            render_topic("sf.{objekt}", "A", "/x"),
            Err(TopicNameError::UnknownPlaceholder { placeholder, .. }) if placeholder == "{objekt}"
        ));
        assert!(matches!(
            render_topic("sf.{object", "A", "/x"),
            Err(TopicNameError::UnknownPlaceholder { .. })
        ));
        assert!(matches!(
            render_topic("{object}", "", "/x"),
            Err(TopicNameError::IllegalName { .. })
        ));
        assert!(matches!(
            render_topic("..", "", "/x"),
            Err(TopicNameError::IllegalName { .. })
        ));
        let long = "a".repeat(250);
        assert!(matches!(
            render_topic(&long, "", "/x"),
            Err(TopicNameError::IllegalName { .. })
        ));
        assert!(render_topic(&long[..249], "", "/x").is_ok());
    }
}
