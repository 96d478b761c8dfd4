// Package oidc runs openid-client, the certified OpenID relying-party
// library, and panva's dpop against Tollgate's issuer and gateway:
// clients nobody here wrote, reading the discovery document and speaking
// RFC 6749, 6749 §6, 7009 and 9449 (DPoP) as the specifications say, not
// as Tollgate's own tests assume. It is test-only.
package oidc
