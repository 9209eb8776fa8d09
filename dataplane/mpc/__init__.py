"""What MPC parties run on shares: Shamir sharing of input vectors, noise drawn inside MPC,
and the party program itself (started by jobs/engines/mpc/parties.py)."""
