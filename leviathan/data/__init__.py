"""leviathan.data"""
