/**
 * credentials-exchange: never calls cb (for timeout / deadline tests).
 */
module.exports = function (client, scope, audience, context, cb) {
  // intentionally never answers
};
