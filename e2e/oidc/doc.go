// Package oidc runs openid-client, the certified OpenID relying-party
// library, against Tollgate's issuer and gateway: a client nobody here
// wrote, reading the discovery document and speaking RFC 6749, 6749 §6
// and 7009 as the specifications say, not as Tollgate's own tests
// assume. It is test-only.
package oidc
