//! The OpenAPI 3.1 document served at `/v1/openapi.json`, generated from
//! the handlers' `#[utoipa::path]` annotations and the schemas of the API's
//! types ([`stratus_core::api`]), so it cannot drift from them. A route
//! added to a resource's `routes()` belongs in `paths` below;
//! `tests/e2e_http.rs` checks that every path listed is routed and answers
//! with a status the document lists.

use super::{artifacts, events, functions, invocations, jobs, limits, meta, objects, pyenvs, settings, trust, workers};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Stratus API", description = "Deploy functions, invoke them, and read their invocations."),
    paths(
        meta::healthz,
        meta::metrics,
        meta::openapi,
        artifacts::put_artifact,
        artifacts::head_artifact,
        functions::list_functions,
        functions::deploy,
        functions::get_function,
        functions::delete_function,
        invocations::invoke,
        invocations::list_invocations,
        invocations::get_invocation,
        invocations::get_output,
        invocations::get_logs,
        objects::list_bucket,
        objects::put_object,
        objects::get_object,
        objects::head_object,
        objects::delete_object,
        jobs::create_job,
        jobs::list_jobs,
        jobs::get_job,
        jobs::job_results,
        jobs::job_timings,
        jobs::job_events,
        jobs::cancel_job,
        workers::register,
        workers::list,
        workers::deregister,
        workers::heartbeat,
        workers::lease,
        workers::complete,
        trust::create_project,
        trust::list_projects,
        trust::show_project,
        trust::delete_project,
        trust::set_quotas,
        trust::purge_project,
        trust::create_token,
        trust::list_tokens,
        trust::revoke_token,
        trust::audit,
        trust::whoami,
        events::publish,
        events::list_events,
        events::create_trigger,
        events::list_triggers,
        events::show_trigger,
        events::delete_trigger,
        events::enable_trigger,
        events::disable_trigger,
        events::create_schedule,
        events::list_schedules,
        events::show_schedule,
        events::delete_schedule,
        events::pause_schedule,
        events::resume_schedule,
        events::backfill_schedule,
        settings::list_variables,
        settings::get_variable,
        settings::set_variable,
        settings::delete_variable,
        settings::list_secrets,
        settings::show_secret,
        settings::set_secret,
        settings::delete_secret,
        settings::attempt_settings,
        limits::list_limits,
        limits::show_limit,
        limits::set_limit,
        limits::delete_limit,
        limits::reset_limit,
        pyenvs::list_pyenvs,
        pyenvs::show_pyenv,
        pyenvs::set_pyenv,
        pyenvs::delete_pyenv,
        crate::ui::create_code,
    ),
    modifiers(&Bearer)
)]
struct Doc;

/// Every `/v1` operation but this document takes `Authorization: Bearer
/// TOKEN`, and may answer 401 (no live token) or 403 (a role that does not
/// allow it, or a foreign Host or Origin).
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API token (`stratus token create`); see docs/security.md."))
            .build();
        doc.components.get_or_insert_with(Default::default).add_security_scheme("bearer", SecurityScheme::Http(scheme));
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            let guarded = path.starts_with("/v1/") && path != "/v1/openapi.json";
            for op in
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.head].into_iter().flatten()
            {
                if guarded {
                    op.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
                    op.responses
                        .responses
                        .insert("401".into(), error("no token, or one unknown, expired or revoked").into());
                    op.responses.responses.insert("403".into(), error("the token's role does not allow this").into());
                }
            }
        }
    }
}

pub fn document() -> utoipa::openapi::OpenApi {
    Doc::openapi()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every operation and the statuses it documents. Clients and the
    /// end-to-end tests rely on these; a change here is a change of the API.
    const OPERATIONS: &[(&str, &str, &[u16])] = &[
        ("/healthz", "get", &[200]),
        ("/metrics", "get", &[200, 401]),
        ("/v1/openapi.json", "get", &[200]),
        ("/v1/artifacts/{digest}", "put", &[201, 400, 413]),
        ("/v1/artifacts/{digest}", "head", &[200, 404]),
        ("/v1/events", "post", &[202, 400]),
        ("/v1/events", "get", &[200, 400]),
        ("/v1/triggers", "post", &[201, 400, 409]),
        ("/v1/triggers", "get", &[200]),
        ("/v1/triggers/{name}", "get", &[200, 400, 404]),
        ("/v1/triggers/{name}", "delete", &[204, 400, 404]),
        ("/v1/triggers/{name}/enable", "post", &[200, 400, 404]),
        ("/v1/triggers/{name}/disable", "post", &[200, 400, 404]),
        ("/v1/schedules", "post", &[201, 400, 409]),
        ("/v1/schedules", "get", &[200]),
        ("/v1/schedules/{name}", "get", &[200, 400, 404]),
        ("/v1/schedules/{name}", "delete", &[204, 400, 404]),
        ("/v1/schedules/{name}/pause", "post", &[200, 400, 404]),
        ("/v1/schedules/{name}/resume", "post", &[200, 400, 404]),
        ("/v1/schedules/{name}/backfill", "post", &[200, 400, 404]),
        ("/v1/jobs/{id}/timings", "get", &[200, 400, 404]),
        ("/v1/functions", "get", &[200]),
        ("/v1/functions/{name}", "put", &[201, 400, 413]),
        ("/v1/functions/{name}", "get", &[200, 400, 404]),
        ("/v1/functions/{name}", "delete", &[204, 400, 404]),
        ("/v1/functions/{name}/invoke", "post", &[200, 202, 400, 404, 413, 502, 504]),
        ("/v1/invocations", "get", &[200, 400]),
        ("/v1/invocations/{id}", "get", &[200, 400, 404]),
        ("/v1/invocations/{id}/output", "get", &[200, 400, 404, 409, 410]),
        ("/v1/invocations/{id}/logs", "get", &[200, 400, 404, 410]),
        ("/v1/objects/{bucket}", "get", &[200, 400]),
        ("/v1/objects/{bucket}/{key}", "put", &[201, 400, 422]),
        ("/v1/objects/{bucket}/{key}", "get", &[200, 206, 400, 404, 416]),
        ("/v1/objects/{bucket}/{key}", "head", &[200, 404]),
        ("/v1/objects/{bucket}/{key}", "delete", &[204, 400, 404]),
        ("/v1/jobs", "post", &[201, 400, 404, 413, 422]),
        ("/v1/jobs", "get", &[200, 400]),
        ("/v1/jobs/{id}", "get", &[200, 400, 404]),
        ("/v1/jobs/{id}/results", "get", &[200, 400, 404]),
        ("/v1/jobs/{id}/events", "get", &[200, 400, 404]),
        ("/v1/jobs/{id}/cancel", "post", &[200, 400, 404, 409]),
        ("/v1/workers", "post", &[201, 400]),
        ("/v1/workers", "get", &[200]),
        ("/v1/workers/{id}", "delete", &[204, 404, 409]),
        ("/v1/workers/{id}/heartbeat", "post", &[200, 410]),
        ("/v1/workers/{id}/lease", "post", &[200, 400, 410]),
        ("/v1/workers/{id}/complete", "post", &[204, 400]),
        ("/v1/projects", "post", &[201, 400, 409]),
        ("/v1/projects", "get", &[200]),
        ("/v1/projects/{name}", "get", &[200, 404]),
        ("/v1/projects/{name}", "delete", &[204, 404, 409]),
        ("/v1/projects/{name}/quotas", "put", &[200, 400, 404]),
        ("/v1/projects/{name}/purge", "post", &[200, 404]),
        ("/v1/tokens", "post", &[201, 400, 404, 409]),
        ("/v1/tokens", "get", &[200]),
        ("/v1/tokens/{name}", "delete", &[204, 404]),
        ("/v1/audit", "get", &[200, 400]),
        ("/v1/dashboard/codes", "post", &[201, 400]),
        ("/v1/whoami", "get", &[200]),
        ("/v1/variables", "get", &[200]),
        ("/v1/variables/{name}", "get", &[200, 404]),
        ("/v1/variables/{name}", "put", &[200, 400, 404]),
        ("/v1/variables/{name}", "delete", &[204, 404]),
        ("/v1/secrets", "get", &[200]),
        ("/v1/secrets/{name}", "get", &[200, 404]),
        ("/v1/secrets/{name}", "put", &[200, 400, 409]),
        ("/v1/secrets/{name}", "delete", &[204, 404]),
        ("/v1/workers/{id}/attempts/{invocation}/{attempt}/settings", "get", &[200, 404, 409]),
        ("/v1/limits", "get", &[200]),
        ("/v1/limits/{tag}", "get", &[200, 404]),
        ("/v1/limits/{tag}", "put", &[200, 400, 404]),
        ("/v1/limits/{tag}", "delete", &[204, 404]),
        ("/v1/limits/{tag}/reset", "post", &[200, 404]),
        ("/v1/pyenvs", "get", &[200]),
        ("/v1/pyenvs/{name}", "get", &[200, 400, 404]),
        ("/v1/pyenvs/{name}", "put", &[200, 400, 404]),
        ("/v1/pyenvs/{name}", "delete", &[204, 400, 404]),
    ];

    fn document() -> Value {
        serde_json::to_value(super::document()).unwrap()
    }

    #[test]
    fn the_document_lists_every_operation_with_its_statuses() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert_eq!(doc["paths"]["/v1/functions"]["get"]["security"][0]["bearer"], serde_json::json!([]));
        assert!(doc["paths"]["/metrics"]["get"].get("security").is_none());
        let mut listed = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let mut codes: Vec<u16> =
                    op["responses"].as_object().unwrap().keys().map(|c| c.parse().unwrap()).collect();
                codes.sort();
                listed.push((path.clone(), method.clone(), codes));
            }
        }
        // Every /v1 operation but the document itself also answers 401 and 403.
        let guarded = |p: &str| p.starts_with("/v1/") && p != "/v1/openapi.json";
        let mut expected: Vec<_> = OPERATIONS
            .iter()
            .map(|(p, m, c)| {
                let mut codes = c.to_vec();
                if guarded(p) {
                    codes.extend([401, 403]);
                    codes.sort();
                }
                (p.to_string(), m.to_string(), codes)
            })
            .collect();
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected);
    }

    /// The documented tag pattern is the one the server checks.
    #[test]
    fn the_tag_pattern_is_the_servers() {
        let doc = document();
        let param = &doc["paths"]["/v1/limits/{tag}"]["get"]["parameters"][0];
        assert_eq!(param["schema"]["pattern"], stratus_core::names::TAG_PATTERN, "{param}");
    }

    /// Every `$ref` names a schema the document has.
    #[test]
    fn every_reference_resolves() {
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| refs(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "{all:?}");
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
            assert!(doc["components"]["schemas"].get(name).is_some(), "{r} does not resolve");
        }
    }
}
