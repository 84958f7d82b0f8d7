//! `${NAME}` expansion from the environment, for secrets kept out of config files.

/// The result of expanding one string: the text, and the values that came from the environment
/// (they are secrets, to be redacted wherever the dependency is shown).
#[derive(Debug)]
pub(crate) struct Expanded {
    pub(crate) text: String,
    pub(crate) from_env: Vec<String>,
}

/// Expands `${NAME}` using `lookup`; `$$` stands for a literal `$`.
///
/// Errors name the variable (`environment variable PAYMENTS_TOKEN is not set`), never a value.
pub(crate) fn expand(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Expanded, String> {
    let mut text = String::with_capacity(input.len());
    let mut from_env = Vec::new();
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            text.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or_else(|| {
                "unterminated \"${\" (write \"$$\" for a literal \"$\")".to_owned()
            })?;
            let name = &tail[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            let value =
                lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            text.push_str(&value);
            from_env.push(value);
            rest = &tail[end + 1..];
        } else {
            text.push('$');
            rest = after;
        }
    }
    text.push_str(rest);
    Ok(Expanded { text, from_env })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_owned())
    }

    #[test]
    fn expands_variables_and_escapes() {
        let e = expand("Bearer ${TOKEN} costs $$5 or $x", &env).expect("valid input");
        assert_eq!(e.text, "Bearer s3cret costs $5 or $x");
        assert_eq!(e.from_env, vec!["s3cret".to_owned()]);
    }

    #[test]
    fn missing_and_malformed_variables_are_errors() {
        assert_eq!(
            expand("${NOPE}", &env).expect_err("unset variable"),
            "environment variable NOPE is not set"
        );
        assert!(expand("${TOKEN", &env).is_err());
        assert!(expand("${}", &env).is_err());
    }
}
