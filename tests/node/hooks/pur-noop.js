/**
 * pre-user-registration: allow without changes (cb() => data {}).
 */
module.exports = function (user, context, cb) {
  cb();
};
