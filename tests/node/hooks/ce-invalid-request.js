/**
 * credentials-exchange: reject the request with InvalidRequestError.
 */
module.exports = function (client, scope, audience, context, cb) {
  cb(new InvalidRequestError('missing required client metadata'));
};
