"""The MPC engine: data owners secret-share pre-aggregated vectors to three or more compute
parties (MPyC, Shamir, honest majority), which add them and the noise inside MPC."""
