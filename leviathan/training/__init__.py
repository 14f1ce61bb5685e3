"""leviathan.training"""
