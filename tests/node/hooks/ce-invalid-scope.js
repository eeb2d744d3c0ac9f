/**
 * credentials-exchange: refuse the exchange. InvalidScopeError is a global the
 * client-credentials-exchange compiler injects (as are InvalidRequestError and ServerError).
 */
module.exports = function (client, scope, audience, context, cb) {
  cb(new InvalidScopeError('scope "admin" is not allowed for ' + client.id));
};
