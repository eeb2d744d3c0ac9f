-- Standard Webhooks signature schemes (issue 14): a hook signs `v1` (HMAC-SHA256, `whsec_`
-- secret, the default) or `v1a` (Ed25519, `whsk_` private key, `whpk_` public key).
--   hooks.signature_scheme       the scheme of the hook's current signing key; set with that
--                                key, in the same transaction (creation, rotation, switch)
--   signing_secrets.public_key   `whpk_...` for a v1a key (public: published to receivers),
--                                NULL for a v1 secret. `value` stays the AES-GCM ciphertext of
--                                the `whsec_` secret or the `whsk_` private key.
ALTER TABLE hooks ADD COLUMN signature_scheme TEXT NOT NULL DEFAULT 'v1';
ALTER TABLE signing_secrets ADD COLUMN public_key TEXT;
