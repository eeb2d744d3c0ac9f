/**
 * credentials-exchange: echoes what it received as namespaced claims, so a test can
 * check the body and the headers (webhook-*, secret headers) the gateway sent.
 */
module.exports = function (client, scope, audience, context, cb) {
  var wt = context.webtask;
  delete context.webtask;
  var out = {
    scope: scope || [],
    'https://example.com/client': client,
    'https://example.com/audience': audience,
    'https://example.com/context': context,
    'https://example.com/headers': wt.headers
  };
  cb(null, out);
};
