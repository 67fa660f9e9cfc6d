//! Guided steps: an assistant may lead a conversation through a fixed
//! list of questions (file 002's flow: objectives, then targets, then the
//! plan), saving each answer as it comes.
//!
//! An assistant's `steps` is a JSON array of `{"key", "prompt",
//! "instructions"?}`. A conversation with such an assistant opens with the
//! first step's `prompt` as the assistant's first message. Each message
//! the user sends then answers the step the conversation is at: the answer
//! is saved under the step's key (`answers`), the conversation moves on in
//! the same transaction (a compare-and-set, so two devices cannot answer
//! one step twice), and the model is told which step was answered and
//! which comes next, so its answer acknowledges and asks it (guided by the
//! step's `instructions`, e.g. "propose three objectives"). After the last
//! step the model gets every answer and the conversation goes on freely.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Assistant, AssistantError, Conversation, store::StepMove};

/// One guided step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Where its answer is saved: 1-64 letters, digits, `_` or `-`.
    pub key: String,
    /// The question shown to the user.
    pub prompt: String,
    /// What the model should do when it asks this step (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

/// At most this many steps per assistant.
pub const MAX_STEPS: usize = 50;

/// Validates an assistant's steps as given to the API.
pub fn parse(steps: &[Value]) -> Result<Vec<Step>, AssistantError> {
    let invalid = |m: String| AssistantError::Invalid(m);
    if steps.len() > MAX_STEPS {
        return Err(invalid(format!("steps: at most {MAX_STEPS}")));
    }
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    for (i, raw) in steps.iter().enumerate() {
        let step: Step = serde_json::from_value(raw.clone()).map_err(|e| {
            invalid(format!(
                "steps[{i}]: {e} (a step is {{\"key\", \"prompt\", \"instructions\"?}})"
            ))
        })?;
        let key_ok = (1..=64).contains(&step.key.len())
            && step
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !key_ok {
            return Err(invalid(format!(
                "steps[{i}].key: 1-64 letters, digits, `_` or `-`"
            )));
        }
        if out.iter().any(|s| s.key == step.key) {
            return Err(invalid(format!(
                "steps[{i}].key: `{}` is used twice",
                step.key
            )));
        }
        if step.prompt.trim().is_empty() || step.prompt.chars().count() > 2000 {
            return Err(invalid(format!("steps[{i}].prompt: 1-2000 characters")));
        }
        if step
            .instructions
            .as_ref()
            .is_some_and(|t| t.chars().count() > 4000)
        {
            return Err(invalid(format!(
                "steps[{i}].instructions: at most 4000 characters"
            )));
        }
        out.push(step);
    }
    Ok(out)
}

/// The steps of an assistant (stored validated; none if absent).
pub fn of(assistant: &Assistant) -> Vec<Step> {
    assistant
        .steps
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// What a user message does to a guided conversation: the move to store
/// with it, and what the model is told about the steps.
pub fn answer(
    steps: &[Step],
    conversation: &Conversation,
    text: &str,
) -> Option<(StepMove, String)> {
    let at = conversation.step?;
    let current = steps.get(usize::try_from(at).ok()?)?;
    let mut answers = match &conversation.answers {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    answers.insert(current.key.clone(), Value::String(text.to_owned()));
    let next = steps.get(at as usize + 1);
    let mut guide = format!(
        "Guided steps. The user has just answered step \"{}\" (\"{}\").",
        current.key, current.prompt
    );
    match next {
        Some(step) => {
            guide.push_str(&format!(
                " Acknowledge the answer in one sentence, then ask the next step: \"{}\".",
                step.prompt
            ));
            if let Some(extra) = &step.instructions {
                guide.push(' ');
                guide.push_str(extra);
            }
        }
        None => {
            guide.push_str(
                " Every step is answered now; do what your instructions ask with these answers: ",
            );
            guide.push_str(&Value::Object(answers.clone()).to_string());
        }
    }
    let step_move = StepMove {
        from: at,
        to: next.map(|_| at + 1),
        answered: current.key.clone(),
        asks: next.map(|s| s.key.clone()),
        answers: Value::Object(answers).to_string(),
    };
    Some((step_move, guide))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conversation(step: Option<i64>, answers: Value) -> Conversation {
        Conversation {
            id: "c".into(),
            user_id: "u".into(),
            assistant_id: "a".into(),
            title: String::new(),
            created_at: 0,
            updated_at: 0,
            step,
            answers,
        }
    }

    #[test]
    fn steps_are_validated() {
        let ok = parse(&[
            json!({"key": "goal", "prompt": "Your goal?"}),
            json!({"key": "targets", "prompt": "Who?", "instructions": "Propose three."}),
        ])
        .unwrap();
        assert_eq!(ok.len(), 2);
        for bad in [
            json!({"key": "", "prompt": "x"}),
            json!({"key": "a b", "prompt": "x"}),
            json!({"key": "a", "prompt": " "}),
            json!({"key": "a"}),
            json!({"key": "a", "prompt": "x", "other": 1}),
            json!("goal"),
        ] {
            assert!(parse(std::slice::from_ref(&bad)).is_err(), "{bad}");
        }
        assert!(
            parse(&[
                json!({"key": "a", "prompt": "x"}),
                json!({"key": "a", "prompt": "y"})
            ])
            .is_err()
        );
    }

    #[test]
    fn an_answer_saves_under_its_key_and_moves_to_the_next_step() {
        let steps = parse(&[
            json!({"key": "goal", "prompt": "Your goal?"}),
            json!({"key": "targets", "prompt": "Who?", "instructions": "Propose three."}),
        ])
        .unwrap();
        let (m, guide) = answer(&steps, &conversation(Some(0), json!({})), "Sell more").unwrap();
        assert_eq!((m.from, m.to), (0, Some(1)));
        assert_eq!(m.answered, "goal");
        assert_eq!(m.asks.as_deref(), Some("targets"));
        assert_eq!(m.answers, json!({"goal": "Sell more"}).to_string());
        assert!(
            guide.contains("\"Who?\"") && guide.contains("Propose three."),
            "{guide}"
        );

        let (m, guide) = answer(
            &steps,
            &conversation(Some(1), json!({"goal": "Sell more"})),
            "SMEs",
        )
        .unwrap();
        assert_eq!((m.from, m.to), (1, None));
        assert_eq!(m.asks, None);
        assert!(guide.contains(r#""targets":"SMEs""#), "{guide}");
        assert!(answer(&steps, &conversation(None, json!({})), "free").is_none());
    }
}
