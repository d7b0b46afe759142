// A real OpenID Connect provider for the tests: the certified npm package oidc-provider, configured from
// a JSON file the pytest fixture writes (tests/identity/provider.py). Its own development login and
// consent pages stand in for an organisation's; any password is accepted for a known login.
//
// node provider.mjs CONFIG.json  (CONFIG: module, issuer, port, client, people_file, id_token_claims)
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { default: Provider } = await import(pathToFileURL(config.module).href);

// Read on every sign-in, so a test can change a person's groups at the provider between two sign-ins.
const people = () => JSON.parse(readFileSync(config.people_file, "utf8"));

const provider = new Provider(config.issuer, {
  clients: [config.client],
  async findAccount(ctx, id) {
    const person = people()[id];
    if (!person) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...person }) };
  },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "given_name", "family_name", "preferred_username"],
    groups: ["groups"],
  },
  scopes: ["openid", "email", "profile", "groups"],
  // true (the default): claims asked for by scope come from the userinfo endpoint only.
  conformIdTokenClaims: !config.id_token_claims,
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  pkce: { required: () => true },
  cookies: { keys: ["tests-only-cookie-key-0123456789"] },
  ttl: { AuthorizationCode: 60, IdToken: 600, AccessToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
});
provider.proxy = false;
const server = provider.listen(config.port, "127.0.0.1", () => {
  process.stdout.write(`listening ${config.port}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
