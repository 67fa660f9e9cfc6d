//! The web app and the developer console served by the hub: every file the
//! app loads is there, with its type and a same-origin policy.

use std::collections::{BTreeSet, VecDeque};

use crate::helpers::spawn_app;

/// The quoted strings that follow `marker` in `text` (`from "x"`, `src="x"`).
fn quoted_after(text: &str, marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

/// `spec` as an absolute path, relative to the file at `base`.
fn resolve(base: &str, spec: &str) -> String {
    if spec.starts_with('/') {
        return spec.to_owned();
    }
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    for seg in spec.split('/') {
        match seg {
            "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

#[tokio::test]
async fn every_file_the_app_loads_is_served_with_its_type_and_a_same_origin_policy() {
    let app = spawn_app().await;
    let index = app.get("/", None).await;
    assert_eq!(index.status(), 200);
    assert!(
        index.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = index.text().await.unwrap();

    let mut queue: VecDeque<String> = quoted_after(&html, "src=\"")
        .into_iter()
        .chain(quoted_after(&html, "href=\""))
        .filter(|p| p.starts_with('/'))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some(path) = queue.pop_front() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let res = app.get(&path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        let kind = res.headers()["content-type"].to_str().unwrap().to_owned();
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("connect-src 'self' ws: wss:"), "{path}: {csp}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{path}");
        let body = res.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        let expected = match path.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("svg") => "image/svg+xml",
            _ => "",
        };
        assert!(kind.starts_with(expected), "{path}: {kind}");
        if expected == "text/javascript" {
            // Static and dynamic imports of the module.
            for spec in quoted_after(&body, "from \"")
                .into_iter()
                .chain(quoted_after(&body, "import(\""))
            {
                queue.push_back(resolve(&path, &spec));
            }
        }
    }
    // The shell, every page and the SDK bundle were reached.
    for must in [
        "/app/main.js",
        "/app/pages/inbox.js",
        "/app/pages/moderation.js",
        "/app/pages/planning.js",
        "/app/pages/chat.js",
        "/app/pages/assistant.js",
        "/app/pages/operator.js",
        "/vendor/relais.js",
    ] {
        assert!(
            seen.contains(must),
            "{must} not reached from / (reached: {seen:?})"
        );
    }
}

#[tokio::test]
async fn the_developer_console_lives_at_console_and_unknown_files_are_not_found() {
    let app = spawn_app().await;
    let res = app.get("/console", None).await;
    // Followed from the permanent redirect.
    assert_eq!(res.status(), 200);
    assert_eq!(res.url().path(), "/console/");
    let html = res.text().await.unwrap();
    assert!(html.contains("/console/app.js"), "{html}");
    for path in ["/console/app.js", "/console/style.css"] {
        assert_eq!(app.get(path, None).await.status(), 200, "{path}");
    }
    for path in ["/app/nothing.js", "/vendor/other.js", "/app/"] {
        let res = app.get(path, None).await;
        assert_eq!(res.status(), 404, "{path}");
    }
}
