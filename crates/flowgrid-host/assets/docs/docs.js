// The docs page of `flowgrid dev`: Swagger UI over the merged document of the running apps.
// "Authorize" takes an access token (from `flowgrid token` or POST /api/auth/login); it stays in
// this page only (not persisted).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    displayOperationId: true,
    tryItOutEnabled: false,
  });
});
