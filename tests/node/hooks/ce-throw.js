/**
 * credentials-exchange: the hook throws instead of calling cb.
 */
module.exports = function (client, scope, audience, context, cb) {
  throw new Error('thrown by hook');
};
