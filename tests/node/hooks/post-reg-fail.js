/**
 * post-user-registration: fails (Auth0 only logged it).
 */
module.exports = function (user, context, cb) {
  cb(new Error('CRM unavailable'));
};
