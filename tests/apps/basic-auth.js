// json-server middleware: HTTP Basic authentication by express-basic-auth (from the npm
// registry) for the user `oubli` with the password in JSON_SERVER_PASSWORD, when it is set.
const basicAuth = require('express-basic-auth');
const password = process.env.JSON_SERVER_PASSWORD;
module.exports = password
  ? basicAuth({ users: { oubli: password } })
  : (req, res, next) => next();
