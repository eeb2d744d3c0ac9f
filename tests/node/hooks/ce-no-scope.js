/**
 * credentials-exchange: answers claims but no `scope` (Auth0 then resets the scopes).
 */
module.exports = function (client, scope, audience, context, cb) {
  cb(null, { 'https://example.com/claim': 'no-scope' });
};
