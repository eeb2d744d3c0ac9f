/**
 * credentials-exchange: add custom claims and a scope (Auth0 docs style).
 * The gateway must keep the namespaced claims and drop
 * 'https://auth0.com/x' (reserved host) and 'plain' (not a URL).
 */
module.exports = function (client, scope, audience, context, cb) {
  var access_token = {};
  access_token['https://example.com/claim'] = 'x';
  access_token['https://example.com/client'] = client.id;
  access_token['https://example.com/audience'] = audience;
  access_token['https://auth0.com/x'] = 'dropped: auth0.com is reserved';
  access_token['plain'] = 'dropped: not a namespaced claim';
  access_token.scope = scope || [];
  access_token.scope.push('extra');
  cb(null, access_token);
};
