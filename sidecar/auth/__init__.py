"""Authentication: JWT verification against static keys, the local dev key and JWKS sets."""
