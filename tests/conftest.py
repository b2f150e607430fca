pytest_plugins = ["tests.fixtures.aws", "tests.fixtures.oidc", "tests.fixtures.keycloak"]
