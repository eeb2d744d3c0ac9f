/**
 * credentials-exchange: a plain Error (no own `name` property on the wire).
 */
module.exports = function (client, scope, audience, context, cb) {
  cb(new Error('something broke'));
};
