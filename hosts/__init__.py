"""Teams, enroll secrets, hosts and their vitals, online status and users' roles."""
