//! The OpenAPI document (utoipa, generated from the handlers' `#[utoipa::path]`) served at
//! `/openapi.json`, and Swagger UI at `/docs` (assets compiled in from the
//! `utoipa-swagger-ui-vendored` crate, nothing fetched at build or run time).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wrenn API",
        description = "Wrenn control plane REST API. Every `/v1/…` route is also served under `/api/v1/…`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    components(schemas(crate::error::ErrorBody)),
    tags(
        (name = "system"), (name = "auth"), (name = "me"), (name = "api-keys"),
        (name = "teams"), (name = "audit"), (name = "capsules"), (name = "snapshots"),
        (name = "events")
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "wrenn_sid",
                "browser session; unsafe methods also need X-CSRF-Token = cookie wrenn_csrf",
            ))),
        );
    }
}

pub fn swagger_ui(doc: utoipa::openapi::OpenApi) -> SwaggerUi {
    SwaggerUi::new("/docs").url("/openapi.json", doc)
}
