//! `kind = "grpc"`: target, service, authority, metadata.

use super::*;

impl Validator<'_> {
    pub(super) fn grpc(
        &mut self,
        path: &str,
        raw: &RawDependency,
        secrets: &mut Vec<String>,
    ) -> Option<GrpcSpec> {
        let target = self.url(
            &format!("{path}.target"),
            raw.target.as_deref(),
            "target",
            secrets,
        );
        if let Some(t) = &target
            && (t.path() != "/" || t.query().is_some())
        {
            self.problem(format!("{path}.target"), "must be scheme://host:port without a path or query; set the health service name with `service`");
        }
        let secret_names = lowercase_all(raw.secret_metadata.as_deref());
        let mut metadata = MetadataMap::new();
        let mut secret_metadata = Vec::new();
        for (name, value) in raw.metadata.iter().flatten() {
            let mpath = format!("{path}.metadata.{}", key(name));
            let lname = name.to_ascii_lowercase();
            let Ok(mkey) = MetadataKey::from_bytes(lname.as_bytes()) else {
                self.problem(
                    &mpath,
                    "invalid metadata key (lowercase ASCII; binary `-bin` keys are not supported)",
                );
                continue;
            };
            let before = secrets.len();
            let Some(text) = self.expand(&mpath, value, secrets) else {
                continue;
            };
            match MetadataValue::try_from(text.as_str()) {
                Ok(v) => {
                    if secrets.len() > before
                        || SECRET_HEADERS.contains(&lname.as_str())
                        || secret_names.contains(&lname)
                    {
                        secrets.push(text);
                        secret_metadata.push(lname);
                    }
                    metadata.append(mkey, v);
                }
                Err(_) => self.problem(&mpath, "invalid metadata value"),
            }
        }
        let tls = self.tls(&At(path, "tls"), raw.tls.as_ref());
        let target = target?;
        if raw.tls.is_some() && target.scheme() != "https" {
            self.problem(format!("{path}.tls"), "has no effect on an http:// target");
        }
        Some(GrpcSpec {
            target,
            service: raw.service.clone().unwrap_or_default(),
            authority: raw.authority.clone(),
            metadata,
            secret_metadata,
            tls: tls?,
        })
    }
}
